"""Build inputs: which edits change a service image's hash, which do not, and what `changed_paths` names."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from integration.buildinputs import BuildInputs, changed_paths, compute_build_inputs

WEB_DOCKERFILE = """\
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /srv
COPY architecture/ /srv/architecture/
COPY services/web/app/ /srv/app/
CMD ["python", "-m", "app"]
"""

API_DOCKERFILE = WEB_DOCKERFILE.replace("services/web/", "services/api/")

DOCKERIGNORE = """\
# Only architecture/ and services/ go into the images.
use_case_tests/
**/__pycache__/
**/*.md
"""

TREE: dict[str, str] = {
    ".dockerignore": DOCKERIGNORE,
    "README.md": "# the system\n",
    "architecture/__init__.py": "",
    "architecture/contracts/web.py": "EVENTS_PUBLISHED = []\n",
    "services/web/Dockerfile": WEB_DOCKERFILE,
    "services/web/app/__init__.py": "",
    "services/web/app/__main__.py": "print('web')\n",
    "services/web/app/__pycache__/__main__.cpython-311.pyc": "bytecode",
    "services/web/app/NOTES.md": "notes\n",
    "services/api/Dockerfile": API_DOCKERFILE,
    "services/api/app/__main__.py": "print('api')\n",
    "use_case_tests/test_web.py": "def test_web(): pass\n",
}

ARGS = {"PYTHON_IMAGE": "python:3.11-slim"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "system"
    write(root, TREE)
    return root


def write(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def web(root: Path, args: dict[str, str] | None = None) -> BuildInputs:
    return compute_build_inputs(root, root / "services/web/Dockerfile", ARGS if args is None else args)


def edit(root: Path, relative: str) -> None:
    path = root / relative
    path.write_text(path.read_text() + "# edited\n")


# --- what changes the hash -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    ["services/web/app/__main__.py", "architecture/contracts/web.py", "architecture/__init__.py"],
)
def test_editing_a_copied_file_changes_the_hash(root, relative):
    before = web(root)

    edit(root, relative)

    assert relative in before.files
    assert web(root).inputs_hash != before.inputs_hash


def test_a_new_file_in_a_copied_folder_changes_the_hash(root):
    before = web(root)

    write(root, {"services/web/app/helpers.py": "X = 1\n"})

    after = web(root)
    assert "services/web/app/helpers.py" in after.files
    assert after.inputs_hash != before.inputs_hash


def test_deleting_a_copied_file_changes_the_hash(root):
    before = web(root)

    (root / "services/web/app/__init__.py").unlink()

    assert web(root).inputs_hash != before.inputs_hash


def test_build_args_change_the_hash(root):
    assert web(root, {"PYTHON_IMAGE": "a:1"}).inputs_hash != web(root, {"PYTHON_IMAGE": "b:1"}).inputs_hash
    assert web(root, {}).inputs_hash != web(root, {"PYTHON_IMAGE": "a:1"}).inputs_hash


def test_the_dockerfile_text_changes_the_hash(root):
    before = web(root)

    dockerfile = root / "services/web/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("WORKDIR /srv", "WORKDIR /srv\nENV MODE=fast"))

    after = web(root)
    assert after.files == before.files
    assert after.file_hashes["<Dockerfile>"] != before.file_hashes["<Dockerfile>"]
    assert after.inputs_hash != before.inputs_hash


def test_making_a_copied_file_executable_changes_the_hash(root):
    path = root / "services/web/app/__main__.py"
    before = web(root)

    path.chmod(0o755)
    executable = web(root)
    path.chmod(0o644)

    assert executable.inputs_hash != before.inputs_hash
    assert web(root).inputs_hash == before.inputs_hash


# --- what does not change the hash -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "services/api/app/__main__.py",  # another service's code
        "services/api/Dockerfile",  # another service's Dockerfile
        "use_case_tests/test_web.py",  # a test file
        "README.md",  # not copied, and ignored anyway
    ],
)
def test_editing_a_file_the_dockerfile_does_not_copy_keeps_the_hash(root, relative):
    before = web(root)

    edit(root, relative)

    assert relative not in before.files
    assert web(root).inputs_hash == before.inputs_hash


def test_new_files_outside_the_copied_folders_keep_the_hash(root):
    before = web(root)

    write(root, {"services/api/app/new.py": "", "docs/guide.txt": "text", "use_case_tests/test_new.py": ""})

    assert web(root).inputs_hash == before.inputs_hash


@pytest.mark.parametrize(
    "relative",
    ["services/web/app/__pycache__/__main__.cpython-311.pyc", "services/web/app/NOTES.md"],
)
def test_a_dockerignored_file_inside_a_copied_folder_keeps_the_hash(root, relative):
    before = web(root)

    edit(root, relative)
    write(root, {"services/web/app/__pycache__/new.cpython-311.pyc": "more bytecode"})

    assert relative not in before.files
    assert web(root).inputs_hash == before.inputs_hash


def test_a_top_level_pattern_does_not_reach_into_folders(root):
    # `*.md` matches README.md only; NOTES.md lies below services/web/app and is not covered by it.
    (root / ".dockerignore").write_text("use_case_tests/\n**/__pycache__/\n*.md\n")
    (root / "services/web/app/NOTES.md").rename(root / "services/web/app/NOTES.txt")
    before = web(root)

    edit(root, "services/web/app/NOTES.txt")

    assert "services/web/app/NOTES.txt" in before.files
    assert web(root).inputs_hash != before.inputs_hash


def test_an_exception_brings_an_ignored_file_back(root):
    (root / ".dockerignore").write_text("services/web/app/*.md\n!services/web/app/KEEP.md\n")
    write(root, {"services/web/app/KEEP.md": "kept\n"})
    before = web(root)

    assert "services/web/app/KEEP.md" in before.files
    assert "services/web/app/NOTES.md" not in before.files

    edit(root, "services/web/app/NOTES.md")
    assert web(root).inputs_hash == before.inputs_hash

    edit(root, "services/web/app/KEEP.md")
    assert web(root).inputs_hash != before.inputs_hash


def test_an_exception_inside_an_ignored_folder(root):
    (root / ".dockerignore").write_text("services/web/app\n!services/web/app/__main__.py\n")
    before = web(root)

    assert before.files == (
        "architecture/__init__.py",
        "architecture/contracts/web.py",
        "services/web/app/__main__.py",
    )
    edit(root, "services/web/app/__init__.py")
    assert web(root).inputs_hash == before.inputs_hash


def test_a_later_pattern_overrides_an_exception(root):
    (root / ".dockerignore").write_text("*/web/app/*.md\n!services/web/app/*.md\nservices/web/app/NOTES.md\n")
    before = web(root)

    assert "services/web/app/NOTES.md" not in before.files


@pytest.mark.parametrize(
    ("pattern", "ignored", "kept"),
    [
        (
            "**/*.log",
            ["services/web/app/run.log", "services/web/app/deep/er/x.log"],
            ["services/web/app/a.py"],
        ),
        ("services/**/tmp", ["services/web/app/tmp/a.py", "services/web/tmp"], ["services/web/app/tmpl.py"]),
        (
            "**/build/**",
            ["services/web/app/build/x.py", "architecture/build/y.py"],
            ["services/web/app/b.py"],
        ),
        ("architecture/**/*.txt", ["architecture/a.txt", "architecture/x/y/z.txt"], ["architecture/a.py"]),
    ],
)
def test_double_star_patterns(root, pattern, ignored, kept):
    (root / ".dockerignore").write_text(pattern + "\n")
    write(root, dict.fromkeys([*ignored, *kept], "content\n"))
    before = web(root)

    assert not set(ignored) & set(before.files)
    assert set(kept) <= set(before.files)
    for relative in ignored:
        edit(root, relative)
    assert web(root).inputs_hash == before.inputs_hash


def test_a_dockerfile_specific_dockerignore_takes_precedence(root):
    # BuildKit reads services/web/Dockerfile.dockerignore and then ignores the root .dockerignore entirely.
    write(root, {"services/web/Dockerfile.dockerignore": "services/web/app/generated/\n"})
    write(root, {"services/web/app/generated/table.py": "T = 1\n"})
    before = web(root)

    assert "services/web/app/generated/table.py" not in before.files
    assert "services/web/app/NOTES.md" in before.files  # ignored by the root file only
    assert "services/web/app/__pycache__/__main__.cpython-311.pyc" in before.files

    edit(root, "services/web/app/generated/table.py")
    assert web(root).inputs_hash == before.inputs_hash

    edit(root, "services/web/app/NOTES.md")
    assert web(root).inputs_hash != before.inputs_hash


def test_a_dockerfile_specific_dockerignore_of_another_dockerfile_does_not_apply(root):
    write(root, {"services/api/Dockerfile.dockerignore": "services/web/\n"})

    assert "services/web/app/__main__.py" in web(root).files


# --- how the Dockerfile is read ----------------------------------------------------------------------------


def test_copy_from_a_stage_is_not_a_context_read(root):
    (root / "services/web/Dockerfile").write_text(
        "FROM base AS build\n"
        "COPY services/web/app/ /build/app/\n"
        "FROM base\n"
        "COPY --from=build services/api/app/ /srv/app/\n"
        "COPY --from=build --chown=1:1 /build/app/ /srv/app/\n"
    )
    before = web(root)

    assert not before.whole_context
    assert all(f.startswith("services/web/app/") for f in before.files)
    edit(root, "services/api/app/__main__.py")  # the same path, but read from the stage, not the context
    assert web(root).inputs_hash == before.inputs_hash


@pytest.mark.parametrize("source", ["services/${APP}/app", "$APP", "services/web/app/${FILE:-x.py}"])
def test_a_variable_source_falls_back_to_the_whole_context(root, source):
    (root / "services/web/Dockerfile").write_text(f"FROM base\nARG APP=web\nCOPY {source} /srv/app/\n")
    before = web(root)

    assert before.whole_context
    assert "services/api/app/__main__.py" in before.files
    assert "use_case_tests/test_web.py" not in before.files  # .dockerignore still applies
    edit(root, "services/api/app/__main__.py")
    assert web(root).inputs_hash != before.inputs_hash


@pytest.mark.parametrize(
    "instruction",
    ["ADD https://example.com/x.tar.gz /srv/", "RUN --mount=type=bind,target=/src make"],
)
def test_unreadable_reads_fall_back_to_the_whole_context(root, instruction):
    (root / "services/web/Dockerfile").write_text(f"FROM base\n{instruction}\n")

    assert web(root).whole_context


def test_a_precise_dockerfile_does_not_fall_back(root):
    inputs = web(root)

    assert not inputs.whole_context
    assert inputs.files == (
        "architecture/__init__.py",
        "architecture/contracts/web.py",
        "services/web/app/__init__.py",
        "services/web/app/__main__.py",
    )


def test_json_form_copy(root):
    (root / "services/web/Dockerfile").write_text(
        'FROM base\nCOPY ["services/web/app/__main__.py", "architecture/__init__.py", "/srv/"]\n'
        'COPY --chown=1:1 ["services/web/app/__init__.py", "/srv/app/"]\n'
    )
    before = web(root)

    assert before.files == (
        "architecture/__init__.py",
        "services/web/app/__init__.py",
        "services/web/app/__main__.py",
    )
    edit(root, "architecture/contracts/web.py")
    assert web(root).inputs_hash == before.inputs_hash
    edit(root, "services/web/app/__main__.py")
    assert web(root).inputs_hash != before.inputs_hash


def test_continuation_lines_comments_and_lower_case_instructions(root):
    (root / "services/web/Dockerfile").write_text(
        "FROM base\n# COPY services/api/ /nope/\ncopy services/web/app/__main__.py \\\n    /srv/main.py\n"
    )

    assert web(root).files == ("services/web/app/__main__.py",)


def test_a_glob_source_stays_within_one_path_element(root):
    # Like the engine, `*` in a COPY source does not cross `/`: app/*.py copies app/x.py, not app/sub/y.py.
    write(root, {"services/web/app/sub/deep.py": "D = 1\n"})
    (root / "services/web/Dockerfile").write_text("FROM base\nCOPY services/web/app/*.py /srv/\n")
    before = web(root)

    assert before.files == ("services/web/app/__init__.py", "services/web/app/__main__.py")
    edit(root, "services/web/app/sub/deep.py")
    assert web(root).inputs_hash == before.inputs_hash


def test_a_glob_source_matching_a_folder_copies_all_of_it(root):
    (root / "services/web/Dockerfile").write_text("FROM base\nCOPY archi* /srv/\n")

    assert web(root).files == ("architecture/__init__.py", "architecture/contracts/web.py")


def test_copy_dot_copies_the_whole_filtered_context(root):
    (root / "services/web/Dockerfile").write_text("FROM base\nCOPY . /srv/\n")
    inputs = web(root)

    assert not inputs.whole_context
    assert "services/api/app/__main__.py" in inputs.files
    assert "README.md" not in inputs.files


# --- identity ---------------------------------------------------------------------------------------------


def test_the_hash_is_the_same_for_a_copy_of_the_repository_elsewhere(root, tmp_path):
    copy = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(root, copy)

    assert web(copy).inputs_hash == web(root).inputs_hash
    assert web(copy).files == web(root).files


def test_a_dangling_symlink_in_a_copied_folder_does_not_break_hashing(root):
    link = root / "services/web/app/current"
    os.symlink("releases/1", link)
    before = web(root)

    assert "services/web/app/current" in before.files
    link.unlink()
    os.symlink("releases/2", link)
    assert web(root).inputs_hash != before.inputs_hash


def test_the_manifest_is_json_of_the_file_hashes(root):
    inputs = web(root)

    assert json.loads(inputs.manifest()) == dict(inputs.file_hashes)
    assert {"<Dockerfile>", "<build-args>"} <= set(inputs.file_hashes)


# --- changed_paths ----------------------------------------------------------------------------------------


def test_changed_paths_names_edited_added_and_deleted_files(root):
    old = web(root).manifest()

    edit(root, "services/web/app/__main__.py")
    (root / "architecture/contracts/web.py").unlink()
    write(root, {"services/web/app/helpers.py": ""})
    edit(root, "services/api/app/__main__.py")  # not an input of web: never named

    assert changed_paths(old, web(root)) == [
        "architecture/contracts/web.py (deleted)",
        "services/web/app/__main__.py",
        "services/web/app/helpers.py",
    ]


def test_changed_paths_names_the_dockerfile_and_the_build_args(root):
    old = web(root).manifest()

    edit(root, "services/web/Dockerfile")

    assert changed_paths(old, web(root, {"PYTHON_IMAGE": "other:1"})) == ["<Dockerfile>", "<build-args>"]


def test_changed_paths_of_unchanged_inputs_is_empty(root):
    assert changed_paths(web(root).manifest(), web(root)) == []


@pytest.mark.parametrize(
    ("manifest", "says"),
    [(None, "carries no manifest"), ("", "carries no manifest"), ("{oops", "unreadable")],
)
def test_changed_paths_without_a_usable_manifest(root, manifest, says):
    (only,) = changed_paths(manifest, web(root))

    assert says in only
