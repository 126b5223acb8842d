from __future__ import annotations

import pytest

from use_case_tests.harness import ITestHarness
from use_case_tests.mock_harness import MockTestHarness


@pytest.fixture
def mock_test_harness() -> MockTestHarness:
    return MockTestHarness()


# The toolkit's pytest plugin will provide `test_harness` (the mock by default, the real services with
# --integration) once it lands; this local fixture will then be removed.
@pytest.fixture
def test_harness(mock_test_harness: MockTestHarness) -> ITestHarness:
    return mock_test_harness
