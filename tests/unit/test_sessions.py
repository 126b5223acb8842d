"""What the nox sessions pass on to pytest: path options made absolute, --keep spelled out."""

from __future__ import annotations

from pathlib import Path

from integration.sessions import pytest_args


def test_junit_paths_are_taken_from_where_nox_was_started():
    args = pytest_args(["--junitxml=compose/junit.xml", "-k", "visit"], "/work/repo")
    assert args == ["--junitxml=/work/repo/compose/junit.xml", "-k", "visit"]
    assert pytest_args(["--junit-xml", "out/j.xml"], "/r") == ["--junit-xml", "/r/out/j.xml"]
    assert pytest_args(["--basetemp=tmp/b"], "/r") == ["--basetemp=/r/tmp/b"]


def test_absolute_paths_and_other_arguments_are_kept():
    args = ["--junitxml=/abs/j.xml", "-n", "2", "use_case_tests/test_links.py::test_x", "-x"]
    assert pytest_args(args, Path("/elsewhere")) == args


def test_keep_is_the_plugins_keep_stack():
    assert pytest_args(["--keep", "-q"], "/r") == ["--keep-stack", "-q"]
    assert pytest_args(["--keep-stack"], "/r") == ["--keep-stack"]
