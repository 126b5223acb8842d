"""A seeded mutation loop over the bundled example: its Dockerfiles, its .dockerignore and the shape of
the tree its Dockerfiles copy from (renames, deletions, special files, symlinks, huge and unreadable
files, odd names). After every mutation the inputs of both services are computed, and compared with an
image's labels as `images.inspect_state` does (with a stand-in client: no engine needed). Nothing may
raise anything but ConfigError, and nothing may hang: the loop runs in a forked child that must report
every step within STEP_TIMEOUT seconds (`bounded.bounded_steps`), so a hang fails the test, naming the
step and the mutations that led to it.

The seed is fixed: a failure names its episode, and the episode's mutations, in order, reproduce it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import stat
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bounded import bounded_steps
from python_on_whales.exceptions import NoSuchImage

from integration import buildinputs
from integration.buildinputs import BuildInputs, compute_build_inputs
from integration.errors import ConfigError
from integration.images import LABEL_INPUTS_MANIFEST, inspect_state
from integration.model import LABEL_INPUTS_HASH, ServiceSpec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shortener"
SERVICES = ("links", "analytics")
SEED = 20261201
EPISODES = 250
STEPS_PER_EPISODE = 9  # mutations per episode, each followed by both services' inputs and freshness
STEP_TIMEOUT = 10.0
TOTAL_TIMEOUT = 300.0
AS_ROOT = os.geteuid() == 0
ARGS = {"PYTHON_IMAGE": "python:3.11-slim", "<python-image-id>": "sha256:0"}

DOCKERFILE_LINES = [
    "COPY . /srv/",
    "COPY services/*/app/ /srv/",
    "COPY services/links/app/*.py /srv/app/",
    'COPY ["services/links/app/main.py", "/srv/"]',
    "COPY --from=build /x /y",
    "COPY --chown=1:1 architecture/ /srv/architecture/",
    "ADD https://example.com/x.tgz /srv/",
    "RUN --mount=type=bind,target=/src true",
    "COPY $APP /srv/",
    "COPY ${APP:-x} /srv/",
    "COPY services/links/app/[ /srv/",
    "COPY services/links/app/[z-a] /srv/",
    "COPY services/links/app/[!x]*.py /srv/",
    "COPY archi** /srv/",
    "COPY **/*.py /srv/",
    "COPY services/links/link /srv/",
    "COPY services/links/app/pipe /srv/",
    "COPY services/links/app/zero /srv/",
    "COPY services/links/app/loop1 /srv/",
    "COPY nowhere /srv/",
    "COPY ../../outside /srv/",
    "COPY / /srv/",
    "COPY <<EOF /srv/x\nhello\nEOF",
    "RUN <<EOF\ncat /x\nEOF",
    "FROM scratch AS build",
    "BOGUS instruction",
    'COPY "unbalanced /srv/',
    "COPY services/links/app/ \\\n  /srv/app/",
    "# escape=`",
    "ARG APP=links",
    "EXPOSE 99999",
    "ONBUILD FROM x",
    "COPY a",
    "COPY --exclude=*.py services/ /srv/",
]
IGNORE_LINES = [
    "!",
    "  !  ",
    "!services/links/app/main.py",
    "!**/keep",
    "**",
    "**/",
    "**/*.py",
    "services/**",
    "services/**/app/*",
    "services/*/app/[a-m]*.py",
    "services/*/app/[!a]*",
    "services/*/app/[^a]*",
    "[",
    "[]",
    "[z-a]",
    "[a-]",
    "x\\",
    "\\[literal]",
    "   # not a comment",
    "# a comment",
    "architecture   ",
    "   services/analytics/",
    "/services/links/app/models.py",
    "./architecture/../architecture/contracts",
    "services/links/app/*a*a*a*a*a*a*b",
    "**/**/**/**/**/**/**/x",
    ".",
    "/",
    "..",
    "*",
    "?",
]
PATTERN_ALPHABET = "ab*?[]!^-\\/. #"
ODD_NAMES = [
    "with space.py",
    "star*.py",
    "[bracket].py",
    "!bang.py",
    "#hash.py",
    "new\nline.py",
    "tab\t.py",
    "trailing ",
    "..dots",
    "ünïcode.py",
    os.fsdecode(b"caf\xe9.py"),  # not UTF-8
    "x" * 200,
]


def walk(root: Path) -> list[Path]:
    """Every entry below root, never following symlinks, never opening anything but folders."""
    found = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            found.append(path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
    return sorted(found)


def folders(root: Path) -> list[Path]:
    return [root, *(p for p in walk(root) if p.is_dir() and not p.is_symlink())]


def restore_permissions(root: Path) -> None:
    """Undo `chmod 0`, folder by folder before listing it, so that the tree can be removed."""
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            folder.chmod(0o755)
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.chmod(entry.path, 0o644)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        restore_permissions(path)
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


class Mutator:
    def __init__(self, rng: random.Random, root: Path) -> None:
        self.rng = rng
        self.root = root

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def rel(self, path: Path) -> str:
        return os.fsdecode(os.fsencode(path.relative_to(self.root))).encode("unicode_escape").decode()

    # --- the Dockerfiles ----------------------------------------------------------------------------------

    def dockerfile(self) -> Path:
        return self.root / "services" / self.pick(list(SERVICES)) / "Dockerfile"

    def edit_dockerfile(self) -> str:
        path = self.dockerfile()
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return f"{self.rel(path)} is gone"
        if not stat.S_ISREG(mode):
            return f"{self.rel(path)} is no file"
        data = path.read_bytes()
        lines = data.split(b"\n")
        how = self.rng.randrange(9)
        if how <= 2:
            line = self.pick(DOCKERFILE_LINES)
            if self.rng.random() < 0.4:
                line = f"COPY {self.rel(self.pick(walk(self.root)))} /srv/"
            lines.insert(self.rng.randrange(len(lines) + 1), line.encode())
            what = f"insert {line!r}"
        elif how == 3 and lines:
            del lines[self.rng.randrange(len(lines))]
            what = "delete a line"
        elif how == 4 and lines:
            i, j = self.rng.randrange(len(lines)), self.rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            what = "swap two lines"
        elif how == 5 and data:
            at = self.rng.randrange(len(data))
            byte = self.rng.randrange(256)
            path.write_bytes(data[:at] + bytes([byte]) + data[at + 1 :])
            return f"{self.rel(path)}: byte {at} := {byte:#x}"
        elif how == 6 and data:
            at = self.rng.randrange(len(data))
            path.write_bytes(data[:at])
            return f"{self.rel(path)}: truncated at {at}"
        elif how == 7:
            line = f"COPY {self.glob_of(self.pick(walk(self.root)))} /srv/"
            lines.insert(self.rng.randrange(len(lines) + 1), line.encode())
            what = f"insert {line!r}"
        else:
            lines = [line.replace(b"\n", b"\r\n") + b"\r" for line in lines]
            what = "CRLF"
        path.write_bytes(b"\n".join(lines))
        return f"{self.rel(path)}: {what}"

    def glob_of(self, path: Path) -> str:
        text = list(self.rel(path))
        for _ in range(self.rng.randrange(1, 3)):
            if text:
                text[self.rng.randrange(len(text))] = self.pick(["*", "?", "[a-z]", "**", "[!.]"])
        return "".join(text)

    def replace_dockerfile(self) -> str:
        path = self.dockerfile()
        remove(path)
        how = self.pick(["fifo", "dev-zero", "folder", "loop", "dangling", "gone"])
        self.make_special(path, how)
        return f"{self.rel(path)} := {how}"

    # --- .dockerignore ------------------------------------------------------------------------------------

    def ignore_path(self) -> Path:
        if self.rng.random() < 0.2:
            return self.root / "services" / self.pick(list(SERVICES)) / "Dockerfile.dockerignore"
        return self.root / ".dockerignore"

    def random_pattern(self) -> str:
        return "".join(self.pick(list(PATTERN_ALPHABET)) for _ in range(self.rng.randrange(1, 12)))

    def edit_ignore(self) -> str:
        path = self.ignore_path()
        try:
            data = path.read_bytes() if stat.S_ISREG(os.lstat(path).st_mode) else b""
        except OSError:
            data = b""
        lines = data.split(b"\n")
        how = self.rng.randrange(10)
        if how <= 3:
            line = self.pick(IGNORE_LINES) if how <= 2 else self.random_pattern()
            if self.rng.random() < 0.3:
                line = ("!" if self.rng.random() < 0.5 else "") + self.glob_of(self.pick(walk(self.root)))
            lines.insert(self.rng.randrange(len(lines) + 1), line.encode())
            what = f"insert {line!r}"
        elif how == 4 and lines:
            del lines[self.rng.randrange(len(lines))]
            what = "delete a line"
        elif how == 5:
            at = self.rng.randrange(len(lines))
            lines[at] += bytes([self.rng.randrange(0x80, 0x100)])
            what = f"a non-UTF-8 byte on line {at + 1}"
        elif how == 6:
            lines[0] = b"\xef\xbb\xbf" + lines[0]
            what = "a BOM"
        elif how == 7:
            lines = [line + self.pick([b"\r", b"  ", b"\t", b" \r"]) for line in lines]
            what = "trailing white space"
        elif how == 8 and self.rng.random() < 0.2:
            lines.append(b"x" * 70000)
            what = "a 70000-byte line"
        else:
            remove(path)
            how_special = self.pick(["fifo", "dev-zero", "folder", "loop", "dangling", "gone", "outside"])
            self.make_special(path, how_special)
            return f"{self.rel(path)} := {how_special}"
        remove(path)
        path.write_bytes(b"\n".join(lines))
        return f"{self.rel(path)}: {what}"

    # --- the tree -----------------------------------------------------------------------------------------

    def make_special(self, path: Path, how: str) -> None:
        if how == "fifo":
            os.mkfifo(path)
        elif how == "dev-zero":
            os.symlink("/dev/zero", path)
        elif how == "folder":
            path.mkdir()
        elif how == "loop":
            os.symlink(path.name, path)
        elif how == "dangling":
            os.symlink("no/such/file", path)
        elif how == "outside":
            os.symlink("/etc/hostname", path)
        elif how == "socket":
            back = os.getcwd()
            os.chdir(path.parent)  # a socket's path has at most 107 bytes: bind the name, relative
            try:
                with socket.socket(socket.AF_UNIX) as server:
                    server.bind(path.name)
            finally:
                os.chdir(back)
        elif how == "device" and AS_ROOT:
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
        elif how == "huge":
            with open(path, "wb") as handle:
                handle.truncate(10 << 30)  # sparse: takes no disk
        elif how == "gone":
            pass
        else:
            path.write_bytes(os.urandom(self.rng.randrange(64)))

    def add_special(self) -> str:
        folder = self.pick([f for f in folders(self.root) if "services" in f.parts] or [self.root])
        how = self.pick(
            ["fifo", "dev-zero", "loop", "dangling", "outside", "socket", "device", "huge", "file"]
        )
        name = self.pick(["pipe", "zero", "loop1", "x.py", "link", self.pick(ODD_NAMES)])
        path = folder / name
        if os.path.lexists(path):
            remove(path)
        if how == "loop":
            os.symlink("loop2", path)
            if not os.path.lexists(folder / "loop2"):
                os.symlink(name, folder / "loop2")
        else:
            self.make_special(path, how)
        return f"add {how} {self.rel(path)}"

    def add_link(self) -> str:
        entries = walk(self.root)
        source = self.pick(entries)
        folder = self.pick(folders(self.root))
        path = folder / self.pick(["link", "lib", "app", "main.py", "Dockerfile"])
        if os.path.lexists(path):
            remove(path)
        relative = self.rng.random() < 0.7
        target = os.path.relpath(source, folder) if relative else str(source)
        os.symlink(target, path)
        return f"link {self.rel(path)} -> {target!r}"

    def rename(self) -> str:
        entries = walk(self.root)
        if not entries:
            return "nothing to rename"
        source = self.pick(entries)
        folder = self.pick(folders(self.root))
        name = self.pick([*ODD_NAMES, source.name + ".old", "app", "main.py", "Dockerfile"])
        destination = folder / name
        if destination == source or destination.is_relative_to(source) or os.path.lexists(destination):
            return f"rename {self.rel(source)}: skipped"
        source.rename(destination)
        return f"rename {self.rel(source)} -> {self.rel(destination)}"

    def delete(self) -> str:
        entries = walk(self.root)
        if not entries:
            return "nothing to delete"
        victim = self.pick(entries)
        remove(victim)
        return f"delete {self.rel(victim)}"

    def deny(self) -> str:
        # As root nothing is unreadable, whatever the mode: the read then succeeds, which is fine too.
        victim = self.pick(walk(self.root))
        if victim.is_symlink():
            return f"chmod 0 {self.rel(victim)}: a symlink, skipped"
        victim.chmod(0)
        return f"chmod 0 {self.rel(victim)}"

    def deepen(self) -> str:
        folder = self.pick(folders(self.root))
        deep = folder.joinpath(*["d"] * self.rng.randrange(5, 60))
        deep.mkdir(parents=True, exist_ok=True)
        (deep / "leaf.py").write_text("")
        return f"deep folder under {self.rel(folder)}"

    def mutate(self) -> str:
        choices: list[tuple[float, Callable[[], str]]] = [
            (4, self.edit_dockerfile),
            (0.6, self.replace_dockerfile),
            (4, self.edit_ignore),
            (2, self.add_special),
            (1.5, self.add_link),
            (2, self.rename),
            (1.5, self.delete),
            (0.7, self.deny),
            (0.4, self.deepen),
        ]
        weights = [w for w, _ in choices]
        (_, action) = self.rng.choices(choices, weights)[0]
        return action()


class Images:
    """The `client.image` of a DockerClient, as far as `inspect_state` uses it."""

    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels

    def inspect(self, image: str) -> Any:
        if self.labels is None:
            raise NoSuchImage(["docker", "image", "inspect", image], 1, b"", b"No such image")
        return SimpleNamespace(id="sha256:" + "0" * 64, config=SimpleNamespace(labels=self.labels))


def labels_for(
    rng: random.Random, inputs: BuildInputs, baseline: BuildInputs | None
) -> dict[str, str] | None:
    how = rng.randrange(6)
    if how == 0:
        return None  # no such image
    if how == 1:
        return {}
    if how == 2 and baseline is not None:
        return {LABEL_INPUTS_HASH: baseline.inputs_hash, LABEL_INPUTS_MANIFEST: baseline.manifest()}
    if how == 3:
        return {LABEL_INPUTS_HASH: inputs.inputs_hash, LABEL_INPUTS_MANIFEST: inputs.manifest()}
    garbage = rng.choice(["", "{", "[]", "3", "null", '{"a": 1}', '{"<Dockerfile>": []}', "[" * 5000])
    return {LABEL_INPUTS_HASH: rng.choice(["", "x", inputs.inputs_hash[:8]]), LABEL_INPUTS_MANIFEST: garbage}


def check_one(rng: random.Random, root: Path, service: str, baseline: BuildInputs | None) -> tuple[str, str]:
    """One service's inputs and freshness: ("result" | "config-error" | "other-error", detail)."""
    dockerfile = root / "services" / service / "Dockerfile"
    try:
        inputs = compute_build_inputs(root, dockerfile, ARGS)
    except ConfigError as exc:
        return "config-error", str(exc)
    except BaseException:
        return "other-error", traceback.format_exc()
    spec = ServiceSpec(
        name=service, build_dir=dockerfile.parent, dockerfile=dockerfile, port=8000, image=service
    )
    labels = labels_for(rng, inputs, baseline)
    try:
        state = inspect_state(spec, inputs, SimpleNamespace(image=Images(labels)))  # type: ignore[arg-type]
        expected = labels is not None and labels.get(LABEL_INPUTS_HASH) == inputs.inputs_hash
        if state.fresh != expected:
            return "other-error", f"fresh={state.fresh} with labels {labels}"
        if not state.fresh and not state.changed:
            return "other-error", "stale, and nothing named as changed"
    except BaseException:
        return "other-error", traceback.format_exc()
    return "result", f"{len(inputs.files)} files, whole context: {inputs.whole_context}"


def mutation_loop(pristine: Path, work: Path) -> Iterator[tuple[str, int, int, str, list[str]]]:
    rng = random.Random(SEED)
    baselines = {
        s: compute_build_inputs(pristine, pristine / "services" / s / "Dockerfile", ARGS) for s in SERVICES
    }
    for episode in range(EPISODES):
        if os.path.lexists(work):
            remove(work)
        shutil.copytree(pristine, work, symlinks=True)
        history: list[str] = []
        mutator = Mutator(rng, work)
        for step in range(STEPS_PER_EPISODE):
            try:
                history.append(mutator.mutate())
            except OSError as exc:  # the mutation could not be made (e.g. a name too long): go on
                history.append(f"(mutation failed: {exc})")
            if rng.random() < 0.1:
                buildinputs._file_hash.cache_clear()  # now and then cold, as a fresh process is
            for service in SERVICES:
                kind, detail = check_one(rng, work, service, baselines[service])
                yield kind, episode, step, f"{service}: {detail}", list(history)
    remove(work)


def test_mutations_never_raise_anything_but_config_error_and_never_hang(tmp_path):
    pristine = tmp_path / "pristine"
    shutil.copytree(EXAMPLE, pristine, ignore=shutil.ignore_patterns("__pycache__", ".integration"))
    work = tmp_path / "work"
    try:
        outcomes = bounded_steps(lambda: mutation_loop(pristine, work), STEP_TIMEOUT, TOTAL_TIMEOUT)
    finally:
        if os.path.lexists(work):
            remove(work)

    failures = [o for o in outcomes if o[0] == "other-error"]
    assert not failures, "\n\n".join(
        f"episode {e}, step {s} ({detail})\nmutations: {history}" for _, e, s, detail, history in failures[:3]
    )
    mutations = {(e, s) for _, e, s, _, _ in outcomes}
    assert len(mutations) >= 2000
    kinds = Counter(kind for kind, *_ in outcomes)
    assert kinds["result"] >= 500 and kinds["config-error"] >= 500, kinds  # both ends were exercised
    # The special-file mutations reached the hash: each kind of refusal was seen.
    messages = " ".join(detail for kind, _, _, detail, _ in outcomes if kind == "config-error")
    for says in ("named pipe", "socket", "GiB", "symlink loop", "not UTF-8", "not a valid pattern", "`!`"):
        assert says in messages, says
