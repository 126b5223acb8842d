"""Hostile build contexts: special files, symlinks, unreadable files, huge files, odd `.dockerignore`s.

Every case runs `compute_build_inputs` in a forked child under a hard timeout (`bounded`), so a hang fails
the case instead of hanging the suite; each must end, within a few seconds, in a result or in exactly one
ConfigError that names the file (and the line, where there is one). What the engine does with each file
was measured on engine 20.10 with buildx 0.13 (BuildKit 0.8), the builder the toolkit uses, and its
classic builder; see integration/buildinputs.py. Where the engine builds the file faithfully (symlinks,
which it sends as links), the hash follows what it sends; where the image would not hold what the folder
holds, or the build would fail or hang, the toolkit refuses the file by name.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bounded import Outcome, bounded

from integration import buildinputs
from integration.buildinputs import BuildInputs, changed_paths, compute_build_inputs, parse_dockerignore

AS_ROOT = os.geteuid() == 0
ARGS = {"PYTHON_IMAGE": "python:3.11-slim"}
WEB_DOCKERFILE = """\
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /srv
COPY architecture/ /srv/architecture/
COPY services/web/app/ /srv/app/
CMD ["python", "-m", "app"]
"""
TREE = {
    ".dockerignore": "use_case_tests/\n**/__pycache__/\n*.md\n",
    "README.md": "# the system\n",
    "architecture/__init__.py": "",
    "services/web/Dockerfile": WEB_DOCKERFILE,
    "services/web/app/__init__.py": "",
    "services/web/app/__main__.py": "print('web')\n",
    "services/api/app/__main__.py": "print('api')\n",
    "shared/settings.py": "MODE = 'a'\n",
    "use_case_tests/test_web.py": "def test_web(): pass\n",
}
APP = "services/web/app"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "system"
    for relative, content in TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    yield root
    _restore_permissions(root)


def _restore_permissions(root: Path) -> None:
    """So that the tmp_path clean-up (and a later run) can remove what a case made unreadable."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink() and path.exists() and (path.is_dir() or path.is_file()):
                path.chmod(0o755 if path.is_dir() else 0o644)


def inputs_of(root: Path, dockerfile: str = "services/web/Dockerfile") -> Callable[[], BuildInputs]:
    return lambda: compute_build_inputs(root, root / dockerfile, ARGS)


def run(function: Callable[[], Any], timeout: float = 10.0) -> Outcome:
    outcome = bounded(function, timeout)
    assert outcome.kind != "other-error", f"not a ConfigError:\n{outcome.value}"
    assert outcome.seconds < 5, f"took {outcome.seconds:.1f}s"
    return outcome


def result(function: Callable[[], Any]) -> Any:
    outcome = run(function)
    assert outcome.kind == "result", outcome.value
    return outcome.value


def config_error(function: Callable[[], Any], *named: str) -> str:
    """The one ConfigError's message; it names each of `named`."""
    outcome = run(function)
    assert outcome.kind == "config-error", f"expected a ConfigError, got {outcome.value}"
    message = outcome.message
    assert "\n" not in message
    for name in named:
        assert name in message, message
    return message


def dockerfile(root: Path, text: str) -> None:
    (root / "services/web/Dockerfile").write_text(text)


# --- named pipes, sockets, devices ------------------------------------------------------------------------


def test_a_fifo_in_a_copied_folder_is_one_config_error_naming_it(root):
    os.mkfifo(root / APP / "pipe")

    message = config_error(inputs_of(root), str(root / APP / "pipe"), "named pipe")

    assert "services/web/Dockerfile" in message and ".dockerignore" in message  # what reads it, the fix


def test_a_fifo_named_as_a_copy_source_is_a_config_error(root):
    # The classic builder hangs on exactly this; BuildKit copies nothing.
    os.mkfifo(root / "shared/pipe")
    dockerfile(root, "FROM base\nCOPY shared/pipe /srv/pipe\n")

    config_error(inputs_of(root), str(root / "shared/pipe"))


def test_a_fifo_the_build_does_not_read_changes_nothing(root):
    before = result(inputs_of(root))

    os.mkfifo(root / "shared/pipe")  # not copied
    os.mkfifo(root / "use_case_tests/pipe")  # ignored
    os.mkfifo(root / "pipe")  # at the root, not copied

    assert result(inputs_of(root)).inputs_hash == before.inputs_hash


def test_an_ignored_fifo_in_a_copied_folder_changes_nothing(root):
    before = result(inputs_of(root))

    (root / ".dockerignore").write_text(TREE[".dockerignore"] + f"{APP}/*.pipe\n")
    os.mkfifo(root / APP / "x.pipe")

    after = result(inputs_of(root))
    assert after.files == before.files
    assert after.file_hashes[f"{APP}/__main__.py"] == before.file_hashes[f"{APP}/__main__.py"]


def test_a_fifo_anywhere_counts_when_the_dockerfile_reads_the_whole_context(root):
    os.mkfifo(root / "shared/pipe")
    dockerfile(root, "FROM base\nRUN --mount=type=bind,target=/src make -C /src\n")

    config_error(inputs_of(root), str(root / "shared/pipe"))


def test_a_socket_in_a_copied_folder_is_a_config_error(root):
    # BuildKit copies a socket as an empty file, the classic builder drops it.
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / APP / "app.sock"))

    config_error(inputs_of(root), str(root / APP / "app.sock"), "socket")


@pytest.mark.skipif(not AS_ROOT, reason="mknod of a device needs root (CAP_MKNOD)")
@pytest.mark.parametrize(
    ("kind", "device", "what"), [(stat.S_IFCHR, (1, 3), "character"), (stat.S_IFBLK, (7, 0), "block")]
)
def test_a_device_in_a_copied_folder_is_a_config_error(root, kind, device, what):
    os.mknod(root / APP / "dev", 0o644 | kind, os.makedev(*device))

    config_error(inputs_of(root), str(root / APP / "dev"), f"{what} device")


def test_a_dockerfile_that_is_a_fifo_is_a_config_error(root):
    (root / "services/web/Dockerfile").unlink()
    os.mkfifo(root / "services/web/Dockerfile")

    config_error(inputs_of(root), "services/web/Dockerfile", "named pipe")


# --- symlinks ---------------------------------------------------------------------------------------------


def test_a_symlink_to_dev_zero_is_hashed_as_a_link_without_reading_it(root):
    # The engine sends the link as a link; the image gets `zero -> /dev/zero`, which works in a container.
    os.symlink("/dev/zero", root / APP / "zero")
    before = result(inputs_of(root))

    assert f"{APP}/zero" in before.files
    (root / APP / "zero").unlink()
    os.symlink("/dev/null", root / APP / "zero")
    assert result(inputs_of(root)).inputs_hash != before.inputs_hash


def test_a_symlink_to_dev_zero_named_as_a_copy_source_does_not_hang(root):
    # BuildKit resolves the source within the context (<context>/dev/zero): "not found". Nothing to read.
    os.symlink("/dev/zero", root / "shared/zero")
    dockerfile(root, "FROM base\nCOPY shared/zero /srv/zero\n")

    assert result(inputs_of(root)).files == ("shared/zero",)


def test_a_symlink_loop_in_a_copied_folder_is_hashed_as_links(root):
    # The engine copies both links as they are.
    os.symlink("loop2", root / APP / "loop1")
    os.symlink("loop1", root / APP / "loop2")

    inputs = result(inputs_of(root))

    assert {f"{APP}/loop1", f"{APP}/loop2"} <= set(inputs.files)


def test_a_symlink_loop_named_as_a_copy_source_is_a_config_error_naming_the_line(root):
    # BuildKit fails the build: "too many symlinks".
    os.symlink("loop2", root / "shared/loop1")
    os.symlink("loop1", root / "shared/loop2")
    dockerfile(root, "FROM base\nWORKDIR /srv\nCOPY shared/loop1 /srv/\n")

    message = config_error(inputs_of(root), "services/web/Dockerfile", "line 3", "symlink loop")

    assert "shared/loop1" in message


def test_a_symlink_within_the_context_is_sent_as_a_link(root):
    # Inside a copied folder the image gets the link, not the file: editing the target (not copied) keeps
    # the hash; pointing the link elsewhere changes it.
    os.symlink("../../../shared/settings.py", root / APP / "settings.py")
    before = result(inputs_of(root))

    assert f"{APP}/settings.py" in before.files
    assert "shared/settings.py" not in before.files
    (root / "shared/settings.py").write_text("MODE = 'b'\n")
    assert result(inputs_of(root)).inputs_hash == before.inputs_hash


def test_a_symlink_named_as_a_copy_source_copies_its_target(root):
    # `COPY link` copies what the link points to (measured): the target's content is an input.
    os.symlink("../shared/settings.py", root / "services/settings.py")
    dockerfile(root, "FROM base\nCOPY services/settings.py /srv/\n")
    before = result(inputs_of(root))

    assert set(before.files) == {"services/settings.py", "shared/settings.py"}
    (root / "shared/settings.py").write_text("MODE = 'b'\n")
    assert result(inputs_of(root)).inputs_hash != before.inputs_hash


def test_a_symlinked_folder_named_as_a_copy_source_copies_the_folder(root):
    os.symlink("shared", root / "lib")
    dockerfile(root, "FROM base\nCOPY lib/ /srv/lib/\n")
    before = result(inputs_of(root))

    assert "shared/settings.py" in before.files
    (root / "shared/settings.py").write_text("MODE = 'b'\n")
    assert result(inputs_of(root)).inputs_hash != before.inputs_hash


def test_a_symlink_to_a_folder_inside_a_copied_folder_is_an_input(root):
    os.symlink("../../../shared", root / APP / "shared")
    before = result(inputs_of(root))

    assert f"{APP}/shared" in before.files
    (root / APP / "shared").unlink()
    os.symlink("../../api", root / APP / "shared")
    assert result(inputs_of(root)).inputs_hash != before.inputs_hash


@pytest.mark.parametrize("target", [".", "..", "/", "/etc/hostname", "nowhere", "../../../../../../../x"])
def test_odd_symlink_targets_in_a_copied_folder_are_links(root, target):
    os.symlink(target, root / APP / "odd")

    assert f"{APP}/odd" in result(inputs_of(root)).files


# --- unreadable files and folders --------------------------------------------------------------------------


def _deny(path: Path) -> None:
    """Make `path` unreadable to this (child) process. Root reads everything whatever the mode says, so
    as root the child's os.open/os.scandir refuse it instead, as the kernel would refuse another user."""
    if not AS_ROOT:
        path.chmod(0)
        return
    real_open, real_scandir = os.open, os.scandir

    def fake_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    def fake_scandir(folder: Any = ".") -> Any:
        if Path(folder) == path:
            raise PermissionError(13, "Permission denied", str(folder))
        return real_scandir(folder)

    os.open = fake_open  # type: ignore[assignment]
    os.scandir = fake_scandir  # type: ignore[assignment]


def test_an_unreadable_copied_file_is_one_config_error_naming_it(root):
    # BuildKit would copy it as an empty file (measured as a non-root user): the image would lack it.
    secret = root / APP / "secret.py"
    secret.write_text("KEY = 1\n")

    def case() -> BuildInputs:
        _deny(secret)
        return compute_build_inputs(root, root / "services/web/Dockerfile", ARGS)

    config_error(case, str(secret), "permission denied")


def test_an_unreadable_copied_folder_is_one_config_error_naming_it(root):
    # BuildKit fails the build: "open services/web/app/private: permission denied".
    private = root / APP / "private"
    private.mkdir()
    (private / "x.py").write_text("")

    def case() -> BuildInputs:
        _deny(private)
        return compute_build_inputs(root, root / "services/web/Dockerfile", ARGS)

    config_error(case, str(private), "permission denied")


def test_an_unreadable_folder_the_build_does_not_read_changes_nothing(root):
    # BuildKit does not look into it (the classic builder would fail; the toolkit builds with BuildKit).
    before = result(inputs_of(root))
    private = root / "shared/private"
    private.mkdir()

    def case() -> BuildInputs:
        _deny(private)
        return compute_build_inputs(root, root / "services/web/Dockerfile", ARGS)

    assert result(case).inputs_hash == before.inputs_hash


def test_an_unreadable_dockerignore_is_a_config_error(root):
    def case() -> BuildInputs:
        _deny(root / ".dockerignore")
        return compute_build_inputs(root, root / "services/web/Dockerfile", ARGS)

    config_error(case, str(root / ".dockerignore"), "permission denied")


# --- huge files ---------------------------------------------------------------------------------------


def test_a_huge_sparse_file_is_refused_by_its_size_without_reading_it(root):
    # 10 GiB that take no disk: hashing them would read 10 GiB (and BuildKit would send them, ~40 s per
    # GiB measured here). The size alone decides, at once.
    huge = root / APP / "model.bin"
    with open(huge, "wb") as handle:
        handle.truncate(10 << 30)
    try:
        started = time.monotonic()
        message = config_error(inputs_of(root), str(huge), "10.0 GiB", "INTEGRATION_MAX_INPUT_BYTES")
        assert time.monotonic() - started < 5
        assert ".dockerignore" in message
    finally:
        huge.unlink()


def test_the_size_limit_is_inclusive_and_can_be_raised(root, monkeypatch):
    monkeypatch.setenv("INTEGRATION_MAX_INPUT_BYTES", "1000")
    (root / APP / "data.bin").write_bytes(b"x" * 1000)
    assert f"{APP}/data.bin" in result(inputs_of(root)).files

    (root / APP / "data.bin").write_bytes(b"x" * 1001)
    config_error(inputs_of(root), str(root / APP / "data.bin"), "1001 bytes")

    monkeypatch.setenv("INTEGRATION_MAX_INPUT_BYTES", "2000")
    assert f"{APP}/data.bin" in result(inputs_of(root)).files


@pytest.mark.parametrize("value", ["lots", "-1", "0", "1e9"])
def test_a_malformed_size_limit_is_a_config_error_naming_the_variable(root, monkeypatch, value):
    monkeypatch.setenv("INTEGRATION_MAX_INPUT_BYTES", value)

    config_error(inputs_of(root), "$INTEGRATION_MAX_INPUT_BYTES")


# --- .dockerignore ------------------------------------------------------------------------------------------


def ignore_file(root: Path, data: bytes) -> None:
    (root / ".dockerignore").write_bytes(data)


def web_files(root: Path) -> set[str]:
    return set(result(inputs_of(root)).files)


def test_a_non_utf8_byte_is_one_config_error_naming_the_line(root):
    # BuildKit's pattern then matches nothing, the classic builder's matches the Latin-1 name (measured).
    ignore_file(root, b"use_case_tests/\n# caf\xe9\n" + APP.encode() + b"/caf\xe9.py\n")

    message = config_error(inputs_of(root), str(root / ".dockerignore"), "line 2", "0xe9", "UTF-8")

    assert "line 3" not in message


def test_exceptions_double_stars_and_trailing_spaces_as_the_engine_reads_them(root):
    for name in ("a.log", "b.log", "keep.log", "deep/er/c.log", "deep/er/keep.log", "x.txt", "spaced.txt "):
        path = root / APP / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    ignore_file(
        root,
        b"\xef\xbb\xbf**/*.log   \r\n"  # a BOM, trailing spaces and CRLF: trimmed, as the engine does
        b"!**/keep.log\n"
        b"   # not a comment: the engine tests for # before trimming, so this is a pattern\n"
        b"services/web/app/deep/er/keep.log\n"  # a later rule overrides the exception
        b"services/web/app/spaced.txt \n",  # trimmed: matches `spaced.txt`, not `spaced.txt `
    )

    files = web_files(root)

    assert f"{APP}/a.log" not in files and f"{APP}/deep/er/c.log" not in files
    assert f"{APP}/keep.log" in files
    assert f"{APP}/deep/er/keep.log" not in files
    assert {f"{APP}/x.txt", f"{APP}/spaced.txt "} <= files


def test_a_double_star_glued_to_a_name_spans_whole_folders_only(root):
    # The engine reads `**` before more text as `(.*/)?` (measured): app/**.log matches app/.log and
    # app/x/.log, not app/b.log; app/s**/x.py matches app/sub/x.py.
    for name in ("b.log", "sub/y.log", "sub/x.py"):
        path = root / APP / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    ignore_file(root, b"services/web/app/**.log\nservices/web/app/s**/x.py\n")

    files = web_files(root)

    assert {f"{APP}/b.log", f"{APP}/sub/y.log"} <= files
    assert f"{APP}/sub/x.py" not in files


def test_a_bang_in_a_character_class_is_not_a_negation(root):
    # Go's filepath.Match negates with ^ only; the engine matches [!x] as "! or x" (measured).
    for name in ("b.log", "x.log", "c.log"):
        (root / APP / name).write_text("")
    ignore_file(root, b"services/web/app/[!x].log\nservices/web/app/[^bx].log\n")

    files = web_files(root)

    assert f"{APP}/b.log" in files
    assert f"{APP}/x.log" not in files
    assert f"{APP}/c.log" not in files


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"!", "`!`"),
        (b"  !   ", "`!`"),
        (b"services/[", "not a valid pattern"),
        (b"services/[]", "not a valid pattern"),
        (b"services/[z-a].py", "reversed"),
        (b"services/[a-].py", "not a valid pattern"),
        (b"services/x\\", "backslash"),
        (b"services/" + b"x" * 70000, "longer than"),
    ],
)
def test_a_line_the_engine_refuses_is_one_config_error_naming_it(root, line, says):
    # Each of these fails docker build too (measured): "illegal exclusion pattern", "syntax error in
    # pattern", "bufio.Scanner: token too long".
    ignore_file(root, b"use_case_tests/\n\n" + line + b"\n*.md\n")

    config_error(inputs_of(root), str(root / ".dockerignore"), "line 3", says)


def test_patterns_that_would_backtrack_for_hours_are_matched_in_linear_time(root):
    name = "a" * 60
    (root / APP / name).write_text("")
    ignore_file(root, b"**/*a*a*a*a*a*a*a*a*a*a*a*a*b\n**/**/**/**/**/**/**/**/**/**/**/**/**/b\n")

    assert f"{APP}/{name}" in web_files(root)


def test_a_pattern_with_many_wildcards_still_matches_as_the_engine_does():
    (rule,) = parse_dockerignore("**/a*b*c*d?e[f-h]\n")

    assert rule.pattern.matches("x/y/aXbYcZdQeg")
    assert rule.pattern.matches("aXbYcZdQeg/below")
    assert not rule.pattern.matches("x/aXbYcZdQei")
    assert not rule.pattern.matches("a/b/c/d/e/f")  # a single * does not cross /


@pytest.mark.parametrize("make", ["fifo", "dev-zero", "folder", "loop", "outside"])
def test_a_dockerignore_that_is_no_regular_file(root, make):
    path = root / ".dockerignore"
    path.unlink()
    if make == "fifo":
        os.mkfifo(path)  # the engine waits on it forever (measured, both builders)
        config_error(inputs_of(root), str(path), "named pipe")
        return
    if make == "loop":
        os.symlink(".dockerignore", path)
        config_error(inputs_of(root), str(path), "symlink loop")
        return
    if make == "dev-zero":
        os.symlink("/dev/zero", path)  # BuildKit sees a link out of the context: no .dockerignore
    elif make == "folder":
        path.mkdir()  # BuildKit builds as without one
    else:
        (root.parent / "ignore").write_text("services/\n")
        os.symlink(root.parent / "ignore", path)  # outside the context: BuildKit cannot see it either
    dockerfile(root, "FROM base\nCOPY . /srv/\n")
    assert "use_case_tests/test_web.py" in result(inputs_of(root)).files


def test_a_dockerfile_specific_dockerignore_that_is_a_fifo_is_a_config_error(root):
    os.mkfifo(root / "services/web/Dockerfile.dockerignore")

    config_error(inputs_of(root), "Dockerfile.dockerignore", "named pipe")


# --- names, manifests ---------------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_hashed_by_its_bytes(root):
    # The engine copies it (measured); so the hash includes it, and the manifest stays JSON.
    (root / os.fsdecode(f"{APP}/caf".encode() + b"\xe9.py")).write_text("")

    inputs = result(inputs_of(root))

    assert any(name.startswith(f"{APP}/caf") for name in inputs.files)
    assert inputs.manifest().isascii()


@pytest.mark.parametrize("manifest", ["[]", "3", '"text"', "null", "[" * 100000])
def test_a_manifest_label_that_is_not_an_object_is_unreadable(root, manifest):
    inputs = result(inputs_of(root))

    assert changed_paths(manifest, inputs) == ["(the image's manifest label is unreadable)"]


def test_the_module_never_opens_what_lstat_did_not_show_to_be_a_regular_file(root):
    # A belt to the braces above: every os.open the module makes is of a regular file.
    os.mkfifo(root / "shared/pipe")
    os.symlink("/dev/zero", root / APP / "zero")
    os.symlink("../../../shared/pipe", root / APP / "pipe")

    def case() -> tuple[tuple[str, ...], list[str]]:
        opened: list[str] = []
        real_open = os.open

        def watching_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            opened.append(str(file))
            if not stat.S_ISREG(os.lstat(file).st_mode):
                raise AssertionError(f"opened {file}, which is no regular file")
            return real_open(file, flags, *args, **kwargs)

        os.open = watching_open  # type: ignore[assignment]  (in the child only)
        buildinputs._file_hash.cache_clear()
        inputs = compute_build_inputs(root, root / "services/web/Dockerfile", ARGS)
        return inputs.files, opened

    files, opened = result(case)

    assert f"{APP}/pipe" in files and f"{APP}/zero" in files
    assert any(name.endswith("__main__.py") for name in opened)
