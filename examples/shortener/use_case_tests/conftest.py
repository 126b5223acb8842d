"""Harness fixtures for the toolkit's pytest plugin, which provides `test_harness`: this mock by
default, the real services with `--integration`."""

from __future__ import annotations

import pytest

from use_case_tests.mock_harness import MockTestHarness
from use_case_tests.real_harness import RealServiceHarness


@pytest.fixture
def mock_test_harness() -> MockTestHarness:
    return MockTestHarness()


@pytest.fixture(scope="session")
def real_harness_class() -> type[RealServiceHarness]:
    return RealServiceHarness
