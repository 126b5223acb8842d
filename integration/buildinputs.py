"""What goes into a service image: the files a Dockerfile copies from the context, after `.dockerignore`.

The build context of every service is the system root, so hashing the whole context would rebuild every
service when any one changes. Instead the Dockerfile's COPY and ADD sources are resolved against the
context (with `.dockerignore` applied, as the engine does), and only those files, the Dockerfile and the
build arguments make the hash. The Dockerfile is read by `integration.dockerfile`, the reader the doctor
uses too. A Dockerfile whose reads cannot be told precisely (a variable in a source, a bind mount, an ADD
of a URL) falls back to the whole filtered context, which is never wrong, only slower to invalidate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .dockerfile import Dockerfile
from .dockerfile import read as read_dockerfile

MANIFEST_SEPARATOR = "\n"


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
        old: dict[str, str] = json.loads(old_manifest)
    except ValueError:
        return ["(the image's manifest label is unreadable)"]
    changed = [p for p, h in new.file_hashes.items() if old.get(p) != h]
    changed += [f"{p} (deleted)" for p in old if p not in new.file_hashes]
    return sorted(changed)


# --- .dockerignore -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    negated: bool


def _pattern_to_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within one path element, `**` spans any number."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + "$")


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if line in ("", "."):
            continue
        rules.append(IgnoreRule(_pattern_to_regex(line), negated))
    return rules


def is_ignored(path: str, rules: Iterable[IgnoreRule]) -> bool:
    """Last matching rule wins; a rule matching a parent folder matches everything below it."""
    parents = []
    parts = path.split("/")
    for n in range(1, len(parts) + 1):
        parents.append("/".join(parts[:n]))
    ignored = False
    for rule in rules:
        if any(rule.regex.match(p) for p in parents):
            ignored = not rule.negated
    return ignored


def dockerignore_for(context: Path, dockerfile: Path) -> list[IgnoreRule]:
    """BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile, else `<context>/.dockerignore`."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return parse_dockerignore(candidate.read_text())
    return []


def context_files(context: Path, rules: list[IgnoreRule]) -> list[str]:
    """Every file the engine would receive as the build context, as sorted relative paths."""
    found = []
    for folder, dirs, files in os.walk(context):
        rel_folder = Path(folder).relative_to(context).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        # Skip whole folders that are ignored with no exception rule that could bring files back.
        if not any(r.negated for r in rules):
            dirs[:] = [d for d in dirs if not is_ignored(prefix + d, rules)]
        dirs.sort()
        for name in sorted(files):
            rel = prefix + name
            if not is_ignored(rel, rules):
                found.append(rel)
    return sorted(found)


# --- Dockerfile ----------------------------------------------------------------------------------------


def copy_sources(dockerfile: Dockerfile) -> list[str] | None:
    """Context paths that COPY/ADD instructions read, or None when the Dockerfile defeats precise reading
    (a bind mount, a variable in a source, a URL or git source)."""
    if dockerfile.bind_mounted:
        return None
    sources: list[str] = []
    for copy in dockerfile.copies:
        if copy.from_ is not None:
            continue  # COPY --from=stage reads another stage or image, not the context
        for src in copy.sources:
            if "$" in src or "://" in src or src.startswith("git@"):
                return None
            sources.append(src)
    return sources


def _select(files: list[str], sources: list[str]) -> list[str]:
    selected: set[str] = set()
    for source in sources:
        norm = os.path.normpath(source).replace(os.sep, "/").lstrip("/")
        if norm in (".", ""):
            return files
        # As in the engine, `*` and `?` in a source stay within one path element (fnmatch's would not).
        glob = _pattern_to_regex(norm) if any(ch in norm for ch in "*?[") else None
        for rel in files:
            if rel == norm or rel.startswith(norm + "/"):
                selected.add(rel)
            elif glob is not None:
                parts = rel.split("/")
                for n in range(1, len(parts) + 1):
                    if glob.match("/".join(parts[:n])):
                        selected.add(rel)
                        break
    return sorted(selected)


@lru_cache(maxsize=4096)
def _file_hash(path: str, size: int, mtime_ns: int, executable: bool) -> str:
    digest = hashlib.sha256(b"x" if executable else b"-")
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_hash(path: Path) -> str:
    if path.is_symlink():
        # The engine sends a symlink as a link: hash where it points, and the target when there is one
        # (a dangling link is legal in a context and must not stop the build).
        try:
            target = file_hash(path.resolve(strict=True))
        except (OSError, RuntimeError):
            target = "dangling"
        link = f"{os.readlink(path)}\0{target}"
        return hashlib.sha256(b"l" + link.encode()).hexdigest()[:16]
    stat = path.stat()
    return _file_hash(str(path), stat.st_size, stat.st_mtime_ns, bool(stat.st_mode & 0o111))


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
    Dockerfile the reader refuses is a DockerfileError (a ConfigError naming its line)."""
    context = context.resolve()
    dockerfile = dockerfile.resolve()
    parsed = read_dockerfile(dockerfile)
    dockerfile_text = parsed.text
    rules = dockerignore_for(context, dockerfile)
    every_file = context_files(context, rules)
    sources = copy_sources(parsed)
    whole = sources is None
    files = every_file if sources is None else _select(every_file, sources)
    hashes = {rel: file_hash(context / rel) for rel in files}
    hashes["<Dockerfile>"] = hashlib.sha256(dockerfile_text.encode()).hexdigest()[:16]
    args_text = json.dumps(dict(sorted(build_args.items())))
    hashes["<build-args>"] = hashlib.sha256(args_text.encode()).hexdigest()[:16]
    for key, value in (bases or {}).items():
        hashes[key] = hashlib.sha256(value.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for rel in sorted(hashes):
        digest.update(f"{rel}\0{hashes[rel]}\n".encode())
    return BuildInputs(
        dockerfile=dockerfile,
        context=context,
        files=tuple(files),
        file_hashes=hashes,
        inputs_hash=digest.hexdigest()[:32],
        whole_context=whole,
    )
