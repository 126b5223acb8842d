"""The public API is the package's top level (`integration.__all__`); every module is internal.

What users copy from (the examples, the README's snippets, the harness `init` writes) must import only
top-level names, so that a module can be renamed or cut without breaking a repository that adopted the
toolkit. Pure: reads files and runs `init` on a copy of the shop, no Docker."""

from __future__ import annotations

import argparse
import ast
import re
import shutil
from pathlib import Path

import pytest

import integration
from integration.adopt import cmd_init

REPO = Path(__file__).resolve().parents[2]
# The pytest plugin is loaded by its entry point (`pytest11`), never imported by a repository's code, so
# naming it in `-p integration.plugin` is the one use of a module path a user may write.
ALLOWED_MODULES = {"integration", "integration.plugin"}


def internal_imports(source: str, filename: str) -> list[str]:
    """`from integration.x import y`, `import integration.x` and `integration.x.y` attribute paths."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("integration") and node.module not in ALLOWED_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("integration.") and alias.name not in ALLOWED_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "integration"
            and node.attr not in integration.__all__
        ):
            found.append(f"{filename}:{node.lineno}: integration.{node.attr}")
    return found


def test_every_public_name_resolves_and_nothing_else_does():
    for name in integration.__all__:
        assert getattr(integration, name) is not None, name
    assert sorted(integration.__all__) == integration.__all__
    with pytest.raises(AttributeError, match="no attribute 'Stack'"):
        integration.Stack  # noqa: B018 - the access is the test


def test_the_checker_finds_each_kind_of_internal_import():
    source = (
        "from integration.harness import event_map\nimport integration.stack\ny = integration.stack.Stack\n"
    )
    assert len(internal_imports(source, "x.py")) == 3
    assert internal_imports("from integration import RealServiceHarness, event_map\n", "y.py") == []


def test_the_examples_import_only_public_names():
    problems: list[str] = []
    for path in sorted((REPO / "examples").rglob("*.py")):
        if ".integration" in path.parts or "__pycache__" in path.parts:
            continue
        problems += internal_imports(path.read_text(), str(path.relative_to(REPO)))
    assert problems == []


def test_the_readmes_python_snippets_name_only_public_names():
    readme = (REPO / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert snippets, "README.md has no python snippet: the test would prove nothing"
    problems = [p for snippet in snippets for p in internal_imports(snippet, "README.md")]
    # A snippet's prose may still say where a thing lives; the code a user copies may not.
    assert problems == []
    assert "integration.harness.RealServiceHarness" not in readme


def test_the_harness_that_init_writes_imports_only_public_names(tmp_path, capsys):
    root = tmp_path / "shop"
    shutil.copytree(REPO / "examples" / "shop", root, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text[: text.index("# The service-integration toolkit")].rstrip("\n") + "\n")
    (root / "tests" / "use_cases" / "real_harness.py").unlink()
    assert cmd_init(argparse.Namespace(root=str(root), force=False)) == 0
    capsys.readouterr()
    generated = root / "tests" / "use_cases" / "real_harness.py"
    source = generated.read_text()
    assert "from integration import" in source
    assert internal_imports(source, "real_harness.py") == []
