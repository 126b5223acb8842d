from __future__ import annotations

import pytest

from tests.use_cases.mock_harness import MockTestHarness


def pytest_addoption(parser):
    parser.addoption(
        "--integration",
        action="store_true",
        default=False,
        help="run the use-case tests against the real services",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that waits for events")


@pytest.fixture
def test_harness(request):
    if request.config.getoption("--integration"):
        return request.getfixturevalue("integration_test_harness")
    return MockTestHarness()
