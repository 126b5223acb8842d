"""Building a Dockerfile whose FROM names a registry image this machine cannot have on an offline stand-in.

A repository we did not write says `FROM python:3.11-slim`, not `FROM ${PYTHON_IMAGE}`. Where that image
is neither present nor pullable and a stand-in replaces it (`baseimages.standin_replacing`), the build
runs on a rewritten copy of the Dockerfile in which only that FROM line names the stand-in. The copy is
written to a temporary folder outside the build context, never into the repository, and removed after
the build; the image's input hash is still computed from the original Dockerfile (plus the id of the base
image actually used), so the freshness check needs no copy at all.

`plan` (which FROM lines) and `rewrite` (the copy's text) are pure; `rewritten_dockerfile` is the folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .dockerfile import Dockerfile
from .errors import BuildError


@dataclass(frozen=True)
class Substitution:
    """One FROM line built on another image than the one it names."""

    line: int  # the FROM's first line
    end_line: int  # its last line (a FROM continued over several lines)
    image: str  # what the FROM names, build arguments substituted: python:3.11-slim
    standin: str  # what the build uses instead: integration-local/python:3.11-slim

    def describe(self, service: str) -> str:
        return f"{service}: FROM {self.image} (line {self.line}) built on the offline stand-in {self.standin}"


def plan(
    dockerfile: Dockerfile, build_args: Mapping[str, str], choose: Callable[[str], str]
) -> tuple[Substitution, ...]:
    """The FROM lines to substitute: those whose image `choose` (image -> the image to build on, e.g.
    `baseimages.FromImages.choose`) replaces. Stages, `scratch` and unresolvable variables are kept."""
    found = []
    for from_, image in dockerfile.external_bases(build_args):
        used = choose(image)
        if used != image:
            found.append(Substitution(from_.line, from_.end_line, image, used))
    return tuple(found)


def rewrite(dockerfile: Dockerfile, substitutions: tuple[Substitution, ...]) -> str:
    """The Dockerfile's text with each substituted FROM naming its stand-in, every other line as it was.

    A FROM continued over several lines becomes one line and blank ones, so that every later instruction
    keeps its line number (the build's error messages then point at the original's lines)."""
    lines = dockerfile.text.split("\n")
    by_line = {s.line: s for s in substitutions}
    for from_ in dockerfile.froms:
        substitution = by_line.get(from_.line)
        if substitution is None:
            continue
        words = ["FROM"]
        if from_.platform is not None:
            words.append(f"--platform={from_.platform}")
        words.append(substitution.standin)
        if from_.name is not None:
            words += ["AS", from_.name]
        lines[from_.line - 1] = " ".join(words)
        for index in range(from_.line, min(from_.end_line, len(lines))):
            lines[index] = ""
    return "\n".join(lines)


@contextmanager
def rewritten_dockerfile(original: Path, text: str, context: Path) -> Iterator[Path]:
    """A temporary copy of `original` holding `text`, outside `context`; removed on exit.

    BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile before `<context>/.dockerignore`,
    so a Dockerfile-specific ignore file is copied beside the copy."""
    base = Path(tempfile.gettempdir()).resolve()
    if base.is_relative_to(context.resolve()):
        raise BuildError(
            f"the temporary folder {base} is inside the build context {context}; the rewritten "
            "Dockerfile would be sent with the context. Point TMPDIR outside the repository"
        )
    folder = Path(tempfile.mkdtemp(prefix="integration-dockerfile-", dir=base))
    try:
        copy = folder / original.name
        copy.write_text(text)
        ignore = original.with_name(original.name + ".dockerignore")
        if ignore.is_file():
            shutil.copyfile(ignore, folder / ignore.name)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
