"""What goes into a service image: the files a Dockerfile copies from the context, after `.dockerignore`.

The build context of every service is the system root, so hashing the whole context would rebuild every
service when any one changes. Instead the Dockerfile's COPY and ADD sources are resolved against the
context (with `.dockerignore` applied, as the engine does), and only those files, the Dockerfile and the
build arguments make the hash. The Dockerfile is read by `integration.dockerfile`, the reader the doctor
uses too. A Dockerfile whose reads cannot be told precisely (a variable in a source, a bind mount, an ADD
of a URL) falls back to the whole filtered context, which is never wrong, only slower to invalidate.

What the engine receives, and so what is hashed, follows `docker buildx build` (BuildKit), the builder
the toolkit uses; measured on engine 20.10 with buildx 0.13 (BuildKit 0.8) and its classic builder:

* a symlink is sent as a link and copied as one: its hash is where it points, the target is never
  opened. A COPY *source* that is a symlink is followed within the context (`COPY app/config.yml` where
  config.yml -> ../shared/config.yml copies shared/config.yml), so its target's files join the inputs; a
  source that is a symlink loop fails the build ("too many symlinks") and is a ConfigError here.
* a named pipe, a socket or a device among the files a build copies is a ConfigError naming it: BuildKit
  leaves a pipe out of the image and turns a socket or a device into an empty file, the classic builder
  copies the pipe or device node itself and hangs on `COPY <pipe>`, so no hash can say what the image
  holds. Such files elsewhere in the context are never opened and change nothing.
* a file the toolkit cannot read is a ConfigError naming it (BuildKit would copy it as an empty file);
  so is a folder it cannot list when the build reads from it (BuildKit fails the build on it too).
* a file larger than MAX_FILE_BYTES (1 GiB; $INTEGRATION_MAX_INPUT_BYTES) is a ConfigError, told by its
  size alone: BuildKit sends every byte of it (41 s for a sparse GiB here) and the hash is computed on
  every freshness check, where reading gigabytes is a hang.
* `.dockerignore` is read as the engine reads it (lines split at `\\n`, a UTF-8 BOM dropped, a `#` in the
  first column a comment, surrounding white space trimmed, patterns cleaned); a line the engine refuses
  (a lone `!`, a pattern that is not valid syntax, a line over 64 KiB) is a ConfigError naming the line,
  and so is a byte that is not UTF-8, on which BuildKit and the classic builder disagree.

Nothing here ever opens a file that `lstat` did not show to be a regular file, and reads of regular files
open them non-blocking and check again what was opened: no input can make the hash wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from .dockerfile import Dockerfile
from .dockerfile import read as read_dockerfile
from .errors import ConfigError

MANIFEST_SEPARATOR = "\n"
MAX_FILE_BYTES = 1 << 30  # the largest file hashed as an image input, unless $MAX_FILE_BYTES_ENV says
MAX_FILE_BYTES_ENV = "INTEGRATION_MAX_INPUT_BYTES"
MAX_DOCKERIGNORE_BYTES = 1 << 20
MAX_DOCKERIGNORE_LINE = 65535  # the engine reads .dockerignore with a bufio.Scanner: "token too long"
MAX_SYMLINKS = 255  # as BuildKit, when it resolves a COPY source: "too many symlinks"

# Go's strings.TrimSpace, which the engine applies to each line (str.strip() would also strip \x1c-\x1f).
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
_GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

_SPECIAL = {
    stat.S_IFIFO: (
        "a named pipe (FIFO)",
        "BuildKit leaves it out of the image, and the classic builder hangs on `COPY <pipe>`",
    ),
    stat.S_IFSOCK: (
        "a socket",
        "BuildKit copies it as an empty file, and the classic builder leaves it out",
    ),
    stat.S_IFCHR: (
        "a character device",
        "BuildKit copies it as an empty file, and the classic builder copies the device node",
    ),
    stat.S_IFBLK: (
        "a block device",
        "BuildKit copies it as an empty file, and the classic builder copies the device node",
    ),
}


@dataclass(frozen=True)
class BuildInputs:
    """The inputs of one image build and their hash."""

    dockerfile: Path
    context: Path
    files: tuple[str, ...]  # context-relative POSIX paths, sorted
    file_hashes: Mapping[str, str]  # path -> sha256 prefix, plus "<Dockerfile>" and "<build-args>"
    inputs_hash: str
    whole_context: bool  # True when the Dockerfile could not be read precisely

    def manifest(self) -> str:
        """A compact text form of `file_hashes`, stored in an image label to name what changed later."""
        return json.dumps(dict(sorted(self.file_hashes.items())), separators=(",", ":"))


def changed_paths(old_manifest: str | None, new: BuildInputs) -> list[str]:
    """Paths whose content differs between an image's stored manifest and the current inputs."""
    if not old_manifest:
        return ["(the image carries no manifest of its inputs)"]
    try:
        old = json.loads(old_manifest)
    except (ValueError, RecursionError):
        return ["(the image's manifest label is unreadable)"]
    if not isinstance(old, dict):
        return ["(the image's manifest label is unreadable)"]
    changed = [p for p, h in new.file_hashes.items() if old.get(p) != h]
    changed += [f"{p} (deleted)" for p in old if p not in new.file_hashes]
    return sorted(changed)


def max_file_bytes() -> int:
    """The size above which a copied file is refused: MAX_FILE_BYTES, or $INTEGRATION_MAX_INPUT_BYTES."""
    configured = os.environ.get(MAX_FILE_BYTES_ENV, "").strip()
    if not configured:
        return MAX_FILE_BYTES
    if not configured.isdigit() or int(configured) <= 0:
        raise ConfigError(
            f"${MAX_FILE_BYTES_ENV}",
            None,
            f"must be a number of bytes, such as {MAX_FILE_BYTES}, not {configured[:40]!r}",
        )
    return int(configured)


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# --- patterns (.dockerignore, COPY source globs) ---------------------------------------------------------


class _BadPattern(ValueError):
    pass


_LIT, _ONE, _STAR, _DSTAR, _REST, _CLASS = range(6)
_UNBOUNDED = (_STAR, _DSTAR, _REST)


class _Token(NamedTuple):
    kind: int
    char: str = ""  # _LIT
    negated: bool = False  # _CLASS
    ranges: tuple[tuple[str, str], ...] = ()  # _CLASS


def _class(pattern: str, i: int) -> tuple[_Token, int]:
    """The character class at pattern[i] == '[', as Go's filepath.Match reads it (which the engine uses to
    validate patterns): `^` negates (`!` does not), `\\` escapes, ranges must be in order."""
    n = len(pattern)

    def one(i: int) -> tuple[str, int]:
        if i >= n:
            raise _BadPattern("a character class is not closed with ]")
        if pattern[i] in "-]":
            raise _BadPattern(f"a character class holds a range with no start ({pattern[i]!r} first)")
        if pattern[i] == "\\":
            i += 1
            if i >= n:
                raise _BadPattern("a character class ends with a lone backslash")
        if i + 1 >= n:
            raise _BadPattern("a character class is not closed with ]")
        return pattern[i], i + 1

    i += 1
    negated = i < n and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i < n and pattern[i] == "]" and ranges:
            return _Token(_CLASS, negated=negated, ranges=tuple(ranges)), i + 1
        low, i = one(i)
        high = low
        if pattern[i] == "-":
            high, i = one(i + 1)
        if low > high:
            raise _BadPattern(f"the range {low}-{high} of a character class is reversed")
        ranges.append((low, high))


def _tokens(pattern: str) -> list[_Token]:
    """The engine's reading of a pattern: `*` and `?` stay within one path element, `**` followed by more
    spans any number of elements (`(.*/)?`), a trailing `**` matches everything below, `\\` escapes."""
    tokens: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*" and pattern.startswith("**", i):
            i += 2
            if i < n and pattern[i] == "/":
                i += 1
            kind = _REST if i >= n else _DSTAR
            if tokens and tokens[-1].kind == _DSTAR:
                tokens.pop()  # `**/**/` is `**/`, and `**/**` is `**`: no pile of backtracking groups
            tokens.append(_Token(kind))
            continue
        if c == "*":
            tokens.append(_Token(_STAR))
        elif c == "?":
            tokens.append(_Token(_ONE))
        elif c == "[":
            token, i = _class(pattern, i)
            tokens.append(token)
            continue
        elif c == "\\":
            i += 1
            if i >= n:
                raise _BadPattern("it ends with a lone backslash")
            tokens.append(_Token(_LIT, pattern[i]))
        else:
            tokens.append(_Token(_LIT, c))
        i += 1
    return tokens


_REGEX = {_ONE: "[^/]", _STAR: "[^/]*", _DSTAR: "(?:.*/)?", _REST: ".*"}


def _regex(tokens: list[_Token]) -> str:
    out = []
    for token in tokens:
        if token.kind == _LIT:
            out.append(re.escape(token.char))
        elif token.kind == _CLASS:
            body = "".join(
                re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}"
                for low, high in token.ranges
            )
            out.append(f"[{'^' if token.negated else ''}{body}]")
        else:
            out.append(_REGEX[token.kind])
    return "".join(out)


class _Pattern:
    """One pattern, matched as the engine matches it. Patterns with few wildcards use `re`; others are run
    as a small NFA, linear in the path's length, where `re`'s backtracking could take hours
    (`*a*a*a*a*a*b` against a long name); the engine's Go regexp never backtracks either."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self._kinds = [token.kind for token in self.tokens]
        unbounded = sum(kind in _UNBOUNDED for kind in self._kinds)
        self._re = re.compile(_regex(self.tokens)) if unbounded <= 2 else None

    def fullmatch(self, path: str) -> bool:
        if self._re is not None:
            return self._re.fullmatch(path) is not None
        states = self._start()
        for c in path:
            states = self._step(states, c)
            if not states:
                return False
        return self._accept in states

    def matches(self, path: str) -> bool:
        """The path itself or one of its parent folders matches (a matched folder holds what is below)."""
        if self._re is not None:
            if self._re.fullmatch(path):
                return True
            at = path.find("/")
            while at != -1:
                if self._re.fullmatch(path, 0, at):
                    return True
                at = path.find("/", at + 1)
            return False
        states = self._start()
        for c in path:
            if c == "/" and self._accept in states:
                return True
            states = self._step(states, c)
            if not states:
                return False
        return self._accept in states

    def may_match_below(self, folder: str) -> bool:
        """Something inside `folder` (or the folder) could match: whether the build reads from it."""
        if self.matches(folder):
            return True
        states = self._start()
        for c in folder + "/":
            states = self._step(states, c)
            if not states:
                return False
        return True

    # The NFA: state 2*i is "before token i", 2*i+1 "inside the `(.*/)?` of token i".
    @property
    def _accept(self) -> int:
        return 2 * len(self._kinds)

    def _start(self) -> set[int]:
        return self._closure({0})

    def _closure(self, states: set[int]) -> set[int]:
        todo = list(states)
        while todo:
            state = todo.pop()
            index = state // 2
            if state % 2 == 0 and index < len(self._kinds) and self._kinds[index] in _UNBOUNDED:
                following = state + 2
                if following not in states:
                    states.add(following)
                    todo.append(following)
        return states

    def _step(self, states: set[int], c: str) -> set[int]:
        following: set[int] = set()
        for state in states:
            index, inside = divmod(state, 2)
            if inside:
                if c != "\n":
                    following.add(state)
                if c == "/":
                    following.add(2 * index + 2)
                continue
            if index == len(self._kinds):
                continue
            token = self.tokens[index]
            kind = token.kind
            if kind == _LIT:
                if c == token.char:
                    following.add(state + 2)
            elif kind == _ONE:
                if c != "/":
                    following.add(state + 2)
            elif kind == _STAR:
                if c != "/":
                    following.add(state)
            elif kind == _REST:
                if c != "\n":
                    following.add(state)
            elif kind == _DSTAR:
                if c == "/":
                    following.add(state + 2)
                if c != "\n":
                    following.add(state + 1)
            elif any(low <= c <= high for low, high in token.ranges) != token.negated:
                following.add(state + 2)
        return self._closure(following)


def _has_wildcard(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _clean(text: str) -> str:
    """A path or pattern as the engine cleans it: normalized, `/`-separated, relative ("" : the root)."""
    cleaned = os.path.normpath(text).replace(os.sep, "/").lstrip("/")
    return "" if cleaned == "." else cleaned


# --- .dockerignore -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    pattern: _Pattern
    negated: bool
    line: int = 0  # the .dockerignore line it was read from


def _ignore_lines(data: bytes, path: Path | str) -> list[str]:
    """The lines of a `.dockerignore` as text: one too long for the engine, or not UTF-8, is refused."""
    lines = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if len(raw) > MAX_DOCKERIGNORE_LINE:
            raise ConfigError(
                path,
                None,
                f"line {number}: is longer than {MAX_DOCKERIGNORE_LINE} bytes; docker build fails on it "
                "(bufio.Scanner: token too long)",
                line=number,
            )
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            byte = raw[exc.start : exc.start + 1].hex()
            raise ConfigError(
                path,
                None,
                f"line {number}: byte 0x{byte} is not UTF-8, and docker's builders disagree on what such a "
                "pattern matches (BuildKit: nothing; the classic builder: Latin-1 names)",
                line=number,
                fix="save .dockerignore as UTF-8",
            ) from None
    return lines


def parse_dockerignore(source: str | bytes, path: Path | str = ".dockerignore") -> list[IgnoreRule]:
    """The rules of a `.dockerignore`, read as the engine reads it; a line the engine would refuse, or a
    byte that is not UTF-8, is a ConfigError naming `path` and the line."""
    fix = "correct the line (https://docs.docker.com/build/concepts/context/#dockerignore-files)"
    lines = _ignore_lines(source, path) if isinstance(source, bytes) else source.split("\n")
    rules = []
    for number, raw in enumerate(lines, 1):
        text = raw.removeprefix("\ufeff") if number == 1 else raw
        text = text.removesuffix("\r")
        if text.startswith("#"):
            continue  # only in the first column: the engine trims white space after this test
        text = text.strip(_GO_SPACE)
        if not text:
            continue
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip(_GO_SPACE)
            if not text:
                raise ConfigError(
                    path,
                    None,
                    f"line {number}: a `!` with no pattern after it; docker build fails on it (illegal "
                    'exclusion pattern: "!")',
                    line=number,
                    fix=fix,
                )
        text = _clean(text)
        if not text:
            continue  # `.` or `/`: matches no file
        try:
            pattern = _Pattern(text)
        except _BadPattern as exc:
            raise ConfigError(
                path,
                None,
                f"line {number}: {text[:80]!r} is not a valid pattern: {exc}; docker build fails on it "
                "(syntax error in pattern)",
                line=number,
                fix=fix,
            ) from None
        rules.append(IgnoreRule(pattern, negated, number))
    return rules


def is_ignored(path: str, rules: Iterable[IgnoreRule]) -> bool:
    """Last matching rule wins; a rule matching a parent folder matches everything below it."""
    ignored = False
    for rule in rules:
        if rule.pattern.matches(path):
            ignored = not rule.negated
    return ignored


def dockerignore_for(context: Path, dockerfile: Path) -> list[IgnoreRule]:
    """BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile, else `<context>/.dockerignore`.

    The context's file is read as BuildKit reads it, from the context it was sent: a symlink is followed
    within the context only (one to /dev/zero is then no file at all). A folder of that name is no file
    either. A pipe or a device is a ConfigError; the engine would hang on a pipe."""
    own = dockerfile.with_name(dockerfile.name + ".dockerignore")
    for candidate, within in ((own, False), (context / ".dockerignore", True)):
        data = _read_ignore_file(context, candidate, within)
        if data is not None:
            return parse_dockerignore(data, candidate)
    return []


def _read_ignore_file(context: Path, candidate: Path, within: bool) -> bytes | None:
    try:
        # The context's own file as BuildKit finds it in the context it was sent; the Dockerfile's beside
        # it as the client reads it, through any symlink.
        path = (
            context / _scoped_resolve(context, ".dockerignore")
            if within
            else Path(os.path.realpath(candidate))
        )
    except _SymlinkLoop:
        raise ConfigError(candidate, None, "is a symlink loop; docker build fails on it") from None
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(candidate, None, f"cannot be read: {_why(exc)}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(candidate, None, "is a symlink loop; docker build fails on it")
    if stat.S_ISDIR(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        kind = _SPECIAL.get(stat.S_IFMT(info.st_mode), ("not a regular file", ""))[0]
        raise ConfigError(
            candidate,
            None,
            f"is {kind}, not a text file; docker build would wait on it or fail",
            fix="make it a regular file holding the patterns",
        )
    if info.st_size > MAX_DOCKERIGNORE_BYTES:
        raise ConfigError(
            candidate, None, f"is larger than {MAX_DOCKERIGNORE_BYTES // 1024} KiB; not a .dockerignore"
        )
    try:
        return _read_regular(path, MAX_DOCKERIGNORE_BYTES)
    except OSError as exc:
        raise ConfigError(candidate, None, f"cannot be read: {_why(exc)}") from None


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, opened so that nothing else can make it wait (OSError otherwise)."""
    fd = os.open(path, _O_READ)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "it changed into something that is not a regular file while being read")
        chunks = []
        total = 0
        while total <= limit:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            chunks.append(block)
            total += len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- the context -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tree:
    """The context as the engine would send it: every entry that is not a folder, by its type."""

    root: Path
    entries: Mapping[str, int]  # relative path -> stat.S_IFMT of the entry itself (lstat)
    unreadable: Mapping[str, str]  # relative path of a folder (or entry) that could not be read -> why


def _ignored(bits: tuple[bool, ...], rules: list[IgnoreRule]) -> bool:
    ignored = False
    for bit, rule in zip(bits, rules, strict=True):
        if bit:
            ignored = not rule.negated
    return ignored


def _walk(context: Path, rules: list[IgnoreRule]) -> _Tree:
    """Walk the context without following symlinks and without opening anything but folders.

    As `is_ignored` decides, incrementally: per rule, whether it matches a folder or one of its parents
    is carried down the walk, so a deep tree costs one match per rule and entry, not one per parent."""
    exceptions = any(r.negated for r in rules)
    entries: dict[str, int] = {}
    unreadable: dict[str, str] = {}
    pending: list[tuple[str, tuple[bool, ...]]] = [("", tuple(False for _ in rules))]
    while pending:
        folder, inherited = pending.pop()
        prefix = folder + "/" if folder else ""
        try:
            with os.scandir(context / folder if folder else context) as listing:
                found = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            if not folder:
                raise ConfigError(context, None, "the build context is not a folder") from None
            continue  # removed while walking: not part of the context any more
        except OSError as exc:
            if not folder:
                raise ConfigError(context, None, f"the build context cannot be listed: {_why(exc)}") from None
            unreadable[folder] = _why(exc)
            continue
        for entry in found:
            rel = prefix + entry.name
            bits = tuple(
                above or rule.pattern.fullmatch(rel) for above, rule in zip(inherited, rules, strict=True)
            )
            ignored = _ignored(bits, rules)
            try:
                if entry.is_dir(follow_symlinks=False):
                    # Skip whole folders that are ignored with no exception rule that could bring files back.
                    if exceptions or not ignored:
                        pending.append((rel, bits))
                    continue
                if entry.is_symlink():
                    kind = stat.S_IFLNK
                elif entry.is_file(follow_symlinks=False):
                    kind = stat.S_IFREG
                else:
                    kind = stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if not ignored:
                    unreadable[rel] = _why(exc)
                continue
            if not ignored:
                entries[rel] = kind
    return _Tree(context, entries, unreadable)


def context_files(context: Path, rules: list[IgnoreRule]) -> list[str]:
    """Every file the engine would receive as the build context, as sorted relative paths."""
    return sorted(_walk(context, rules).entries)


class _SymlinkLoop(Exception):
    pass


def _scoped_resolve(root: Path, rel: str) -> str:
    """`rel` with every symlink in it resolved as BuildKit resolves a COPY source: within the context
    (an absolute target starts at the context, `..` stops at it). The result may not exist."""
    queue = deque(rel.split("/"))
    done: list[str] = []
    hops = 0
    while queue:
        part = queue.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(here).st_mode)
            target = os.readlink(here) if is_link else ""
        except OSError:
            return _clean("/".join([*done, part, *queue]))  # missing or unreadable: nothing to resolve
        if not is_link:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise _SymlinkLoop(rel)
        if target.startswith("/"):
            done = []
        queue.extendleft(reversed(target.split("/")))
    return "/".join(done)


# --- Dockerfile ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    text: str  # as written in the COPY or ADD
    line: int


def _sources(dockerfile: Dockerfile) -> list[_Source] | None:
    if dockerfile.bind_mounted:
        return None
    sources: list[_Source] = []
    for copy in dockerfile.copies:
        if copy.from_ is not None:
            continue  # COPY --from=stage reads another stage or image, not the context
        for src in copy.sources:
            if "$" in src or "://" in src or src.startswith("git@"):
                return None
            sources.append(_Source(src, copy.line))
    return sources


def copy_sources(dockerfile: Dockerfile) -> list[str] | None:
    """Context paths that COPY/ADD instructions read, or None when the Dockerfile defeats precise reading
    (a bind mount, a variable in a source, a URL or git source)."""
    sources = _sources(dockerfile)
    return None if sources is None else [s.text for s in sources]


_Reach = str | _Pattern  # what a source reads: a path and everything below it ("" : all), or a glob


def _reads(rel: str, reach: _Reach) -> bool:
    if isinstance(reach, _Pattern):
        return reach.matches(rel)
    return not reach or rel == reach or rel.startswith(reach + "/")


def _select(tree: _Tree, sources: list[_Source], dockerfile: Path) -> tuple[list[str], list[_Reach]]:
    """The entries the sources copy, and what they read (for the unreadable folders)."""
    reaches: list[_Reach] = []

    def follow(rel: str, source: _Source) -> None:
        try:
            resolved = _scoped_resolve(tree.root, rel)
        except _SymlinkLoop:
            raise ConfigError(
                dockerfile,
                None,
                f"line {source.line}: the COPY source {source.text!r} is a symlink loop ({rel}); docker "
                "build fails on it too (too many symlinks)",
                line=source.line,
                fix=f"point {rel} at a file or folder, or copy something else",
            ) from None
        if resolved != rel:
            reaches.append(resolved)

    for source in sources:
        norm = _clean(source.text)
        if not norm:
            return sorted(tree.entries), [""]  # COPY . reads everything
        if not _has_wildcard(norm):
            reaches.append(norm)
            follow(norm, source)
            continue
        try:
            glob = _Pattern(norm)
        except _BadPattern as exc:
            raise ConfigError(
                dockerfile,
                None,
                f"line {source.line}: the COPY source {source.text!r} is not a valid pattern: {exc}; docker "
                "build fails on it too",
                line=source.line,
            ) from None
        reaches.append(glob)
        for rel, kind in tree.entries.items():
            if kind == stat.S_IFLNK and glob.fullmatch(rel):
                follow(rel, source)  # a matched symlink is followed, as a named one
    selected = [rel for rel in tree.entries if any(_reads(rel, reach) for reach in reaches)]
    return sorted(selected), reaches


def _reads_folder(folder: str, reaches: list[_Reach]) -> bool:
    for reach in reaches:
        if isinstance(reach, _Pattern):
            if reach.may_match_below(folder):
                return True
        elif _reads(folder, reach) or reach.startswith(folder + "/"):
            return True
    return False


def _check_readable(tree: _Tree, reaches: list[_Reach]) -> None:
    for rel, why in sorted(tree.unreadable.items()):
        if _reads_folder(rel, reaches):
            raise ConfigError(
                tree.root / rel,
                None,
                f"cannot be read ({why}), and the build copies from it; docker build fails on it too",
                fix="make it readable (chmod a+rX), or add it to .dockerignore",
            )


# --- hashing -------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _file_hash(path: str, size: int, mtime_ns: int, inode: int, mode: int, limit: int) -> str:
    digest = hashlib.sha256(b"x" if mode & 0o111 else b"-")
    fd = os.open(path, _O_READ)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_ino != inode:
            raise OSError(0, "it was replaced while being read; run again")
        total = 0
        while block := os.read(fd, 1 << 20):
            total += len(block)
            if total > limit:
                raise OSError(0, f"it grew past {_size(limit)} while being read")
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()[:16]


def _link_hash(target: str) -> str:
    return hashlib.sha256(b"l" + os.fsencode(target)).hexdigest()[:16]


def _too_large(path: Path, size: int, limit: int, reader: str) -> ConfigError:
    return ConfigError(
        path,
        None,
        f"is {_size(size)}, more than the {_size(limit)} the toolkit hashes for one file that {reader} "
        "copies into its image (docker build would send all of it)",
        fix=f"add it to .dockerignore, or raise ${MAX_FILE_BYTES_ENV} (bytes) if the image needs it",
    )


def _entry_hash(path: Path, kind: int, limit: int, reader: str) -> str | None:
    """The hash of one entry as the engine would send it; None: it vanished since the walk."""
    try:
        if kind == stat.S_IFLNK:
            # The engine sends a symlink as a link: where it points is what the image gets.
            return _link_hash(os.readlink(path))
        if kind == stat.S_IFREG:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                if info.st_size > limit:
                    raise _too_large(path, info.st_size, limit, reader)
                return _file_hash(str(path), info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode, limit)
            kind = stat.S_IFMT(info.st_mode)  # changed since the walk: judge what is there now
            if kind in (stat.S_IFLNK, stat.S_IFDIR):
                raise OSError(0, "it changed while being read; run again")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(
            path,
            None,
            f"cannot be read (permission denied), and {reader} copies it (BuildKit would copy it as an "
            "empty file)",
            fix="make it readable (chmod a+r), or add it to .dockerignore",
        ) from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot be read: {_why(exc)}") from None
    what, builders = _SPECIAL.get(kind, ("not a regular file", "docker cannot copy it as one"))
    raise ConfigError(
        path,
        None,
        f"is {what}, among the files {reader} copies into its image: {builders}, so the image would "
        "not hold what the folder holds",
        fix="delete it, move it out of the copied folders, or add it to .dockerignore",
    )


def file_hash(path: Path) -> str:
    """The hash of one file of a context as the engine would send it (a symlink: where it points).
    A pipe, socket or device, a file that cannot be read or one too large is a ConfigError."""
    try:
        kind = stat.S_IFMT(os.lstat(path).st_mode)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot be read: {_why(exc)}") from None
    found = _entry_hash(path, kind, max_file_bytes(), "the Dockerfile")
    if found is None:
        raise ConfigError(path, None, "disappeared while being read")
    return found


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
        raise ConfigError(path, None, f"{what} cannot be resolved: {exc}") from None


def _require_regular(dockerfile: Path) -> None:
    """The Dockerfile is read only when it is a regular file: a pipe there would make the reader wait."""
    try:
        mode = os.stat(dockerfile).st_mode
    except OSError:
        return  # the reader says why it cannot read it
    if not stat.S_ISREG(mode):
        what = _SPECIAL.get(stat.S_IFMT(mode), ("a folder" if stat.S_ISDIR(mode) else "not a file", ""))[0]
        raise ConfigError(dockerfile, None, f"is {what}, not a Dockerfile")


def compute_build_inputs(
    context: Path,
    dockerfile: Path,
    build_args: Mapping[str, str],
    *,
    bases: Mapping[str, str] | None = None,
) -> BuildInputs:
    """Hash everything that decides the content of an image built from `context` with `dockerfile`.

    `bases` names the base images a build uses beyond the build arguments, as `{"<FROM image>": "<image
    used>@<id>"}`: each becomes an entry of its own, so the manifest names a base that changed. A
    Dockerfile the reader refuses is a DockerfileError (a ConfigError naming its line); a context the
    engine could not build from as it is (see the module's documentation) a ConfigError naming the file."""
    context = _resolved(context, "the build context")
    dockerfile = _resolved(dockerfile, "the Dockerfile")
    _require_regular(dockerfile)
    parsed = read_dockerfile(dockerfile)
    dockerfile_text = parsed.text
    rules = dockerignore_for(context, dockerfile)
    tree = _walk(context, rules)
    sources = _sources(parsed)
    whole = sources is None
    reaches: list[_Reach] = [""]
    files = sorted(tree.entries)
    if sources is not None:
        files, reaches = _select(tree, sources, dockerfile)
    _check_readable(tree, reaches)
    limit = max_file_bytes()
    reader = dockerfile.relative_to(context).as_posix() if dockerfile.is_relative_to(context) else dockerfile
    hashes: dict[str, str] = {}
    for rel in files:
        found = _entry_hash(context / rel, tree.entries[rel], limit, str(reader))
        if found is not None:
            hashes[rel] = found
    files = [rel for rel in files if rel in hashes]
    hashes["<Dockerfile>"] = hashlib.sha256(dockerfile_text.encode()).hexdigest()[:16]
    args_text = json.dumps(dict(sorted(build_args.items())))
    hashes["<build-args>"] = hashlib.sha256(args_text.encode()).hexdigest()[:16]
    for key, value in (bases or {}).items():
        hashes[key] = hashlib.sha256(value.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for rel in sorted(hashes):
        # surrogateescape: a file name that is not UTF-8 is hashed by its bytes, as the engine sends it.
        digest.update(f"{rel}\0{hashes[rel]}\n".encode("utf-8", "surrogateescape"))
    return BuildInputs(
        dockerfile=dockerfile,
        context=context,
        files=tuple(files),
        file_hashes=hashes,
        inputs_hash=digest.hexdigest()[:32],
        whole_context=whole,
    )
