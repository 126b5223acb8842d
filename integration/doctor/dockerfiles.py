"""The services' Dockerfiles, read as `docker build` would with the system root as the build context.

D111: a Dockerfile does not parse. D103: code of the service imports `architecture` but the image never
gets architecture/. D104: a COPY/ADD source is not in the build context (or .dockerignore drops it).
D105: a FROM does not take ${PYTHON_IMAGE}, so the configured and offline base images never reach it.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..baseimages import standin_replacing
from ..buildinputs import IgnoreRule, dockerignore_for, is_ignored
from ..dockerfile import Copy, Dockerfile, DockerfileError, From, Instruction, parse
from .findings import Finding, Project, ServiceView, error, info, warning


def parse_dockerfile(text: str) -> tuple[Instruction, ...]:
    """The instructions of a Dockerfile's text and the line each starts on (`integration.dockerfile`)."""
    return parse(text).instructions


def _read_dockerfiles(project: Project) -> Iterator[tuple[ServiceView, Dockerfile | DockerfileError]]:
    """Each service's Dockerfile once (services may share one), as the reader gives it."""
    seen: set[Path] = set()
    for service in project.services:
        if service.dockerfile in seen or not service.dockerfile.is_file():
            continue
        seen.add(service.dockerfile)
        yield service, project.dockerfile(service.dockerfile)


def _dockerfiles(project: Project) -> Iterator[tuple[ServiceView, Path, Dockerfile]]:
    """Each service's Dockerfile once, parsed; one that does not parse is D111's, skipped here."""
    for service, parsed in _read_dockerfiles(project):
        if isinstance(parsed, Dockerfile):
            yield service, service.dockerfile, parsed


def check_dockerfile_syntax(project: Project) -> list[Finding]:
    """D111: the Dockerfiles the reader refuses, at the line it names."""
    findings = []
    for service, parsed in _read_dockerfiles(project):
        if isinstance(parsed, DockerfileError):
            # DockerfileError's problem is "line N: <what>" when it has a line; the finding gives the
            # line as its location, so only <what> goes into the message.
            problem = parsed.problem.removeprefix(f"line {parsed.line}: ") if parsed.line else parsed.problem
            findings.append(
                error(
                    project.rel(service.dockerfile),
                    parsed.line,
                    "D111",
                    f"service {service.name}: the Dockerfile does not parse: {problem}; `docker build` "
                    "fails the same way",
                    "correct the line (https://docs.docker.com/reference/dockerfile/)",
                )
            )
    return findings


def _imports_architecture(tree: ast.Module) -> ast.stmt | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name == "architecture" or a.name.startswith("architecture.") for a in node.names):
                return node
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").partition(".")[0] == "architecture"
        ):
            return node
    return None


def check_architecture_copied(project: Project) -> list[Finding]:
    """D103: services whose code imports architecture but whose image does not get architecture/."""
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        importer = next(
            (
                f"{project.rel(file)}:{node.lineno}"
                for file, tree in project.modules(project.python_files_under(service.build_dir))
                if (node := _imports_architecture(tree)) is not None
            ),
            None,
        )
        if importer is None or parsed.bind_mounted:
            continue  # nothing imports architecture, or files come from a bind mount: cannot tell
        findings += _architecture_copy_findings(
            project, service, dockerfile, importer, list(parsed.copies), list(parsed.froms)
        )
    return findings


def _architecture_copy_findings(
    project: Project,
    service: ServiceView,
    dockerfile: Path,
    importer: str,
    copies: list[Copy],
    froms: list[From],
) -> list[Finding]:
    rel = project.rel(dockerfile)
    explicit: list[tuple[Copy, str]] = []  # COPY architecture... (D104 checks that it exists)
    whole: list[Copy] = []  # COPY . <dest>
    for copy in copies:
        if copy.from_ is not None:
            continue
        for source in copy.sources:
            norm = _normalized(source)
            if norm == ".":
                whole.append(copy)
            elif (
                norm == "architecture"
                or norm.startswith("architecture/")
                or (_is_glob(norm) and fnmatch.fnmatchcase("architecture", norm))
            ):
                explicit.append((copy, norm))
    if explicit:
        findings = []
        for copy, norm in explicit:
            if norm.startswith("architecture/") or Path(copy.dest.rstrip("/") or "/").name == "architecture":
                continue
            findings.append(
                error(
                    rel,
                    copy.line,
                    "D103",
                    f"`COPY {norm} {copy.dest}` copies the contents of architecture/ into {copy.dest}, not a "
                    f"folder named architecture, so `import architecture` ({importer}) fails with "
                    "ModuleNotFoundError at container start",
                    f"copy it into a folder named architecture: COPY architecture/ "
                    f"{copy.dest.rstrip('/')}/architecture/",
                )
            )
        return findings
    if whole:
        if not is_ignored("architecture/__init__.py", dockerignore_for(project.root, dockerfile)):
            return []
        return [
            error(
                rel,
                whole[0].line,
                "D103",
                f"service {service.name} imports architecture ({importer}) but .dockerignore excludes "
                "architecture/ from `COPY .`, so the container stops with ModuleNotFoundError",
                "stop ignoring architecture/ in .dockerignore",
            )
        ]
    final_stage = len(froms) - 1
    if any(c.from_ is not None and c.stage == final_stage for c in copies):
        return []  # the final stage takes its files from another stage: cannot tell
    return [
        error(
            rel,
            froms[-1].line if froms else 1,
            "D103",
            f"service {service.name} imports architecture ({importer}) but its Dockerfile never copies "
            "architecture/, so the container stops with ModuleNotFoundError: No module named 'architecture'",
            "add `COPY architecture/ /srv/architecture/` (into a folder on the service's PYTHONPATH)",
        )
    ]


def _normalized(source: str) -> str:
    return os.path.normpath(source).replace(os.sep, "/").lstrip("/") if source not in ("", "/") else "."


def _is_glob(source: str) -> bool:
    return any(ch in source for ch in "*?[")


def check_copy_sources(project: Project) -> list[Finding]:
    """D104: COPY/ADD sources that are not in the build context, or that .dockerignore excludes."""
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        rules = dockerignore_for(project.root, dockerfile)
        rel_dockerfile = project.rel(dockerfile)
        build_cmd = f"docker build -f {rel_dockerfile} ."
        for copy in parsed.copies:
            if copy.from_ is not None:
                continue
            for source in copy.sources:
                if "$" in source or "://" in source or source.startswith("git@"):
                    continue
                norm = _normalized(source)
                if norm == ".":
                    continue
                problem = _copy_source_problem(project.root, norm, rules)
                if problem is None:
                    continue
                beside = dockerfile.parent / norm
                if problem == "missing" and (
                    (beside.exists() or (_is_glob(norm) and any(dockerfile.parent.glob(norm))))
                    and not norm.startswith("..")
                ):
                    from_root = project.rel(beside)
                    message = (
                        f"COPY source {source} exists next to the Dockerfile ({from_root}) but not in the "
                        f'build context, the system root: `{build_cmd}` fails with "{norm}: not found"'
                    )
                    fix = f"write the source relative to the system root: {from_root}"
                elif problem == "missing":
                    message = (
                        f"COPY source {source} is not in the build context ({project.root}): "
                        f'`{build_cmd}` fails with "not found"'
                    )
                    fix = "copy a path that exists relative to the system root"
                elif problem == "outside":
                    message = f"COPY source {source} lies outside the build context (the system root)"
                    fix = "move the files into the system or copy them from inside it"
                else:
                    message = f"COPY source {source} is excluded by .dockerignore: the build finds nothing"
                    fix = "stop ignoring it in .dockerignore (add a `!` rule) or do not copy it"
                findings.append(
                    error(rel_dockerfile, copy.line, "D104", f"service {service.name}: {message}", fix)
                )
    return findings


def _copy_source_problem(root: Path, norm: str, rules: list[IgnoreRule]) -> str | None:
    """None when fine; else "outside", "missing" or "ignored"."""
    if norm == ".." or norm.startswith("../"):
        return "outside"
    if _is_glob(norm):
        matches = [p for p in root.glob(norm)]
        if not matches:
            return "missing"
        rels = [p.relative_to(root).as_posix() for p in matches]
        return "ignored" if rules and all(is_ignored(r, rules) for r in rels) else None
    target = root / norm
    if not target.exists():
        return "missing"
    if not rules:
        return None
    if target.is_file():
        return "ignored" if is_ignored(norm, rules) else None
    if is_ignored(norm, rules) and not any(r.negated for r in rules):
        return "ignored"
    return None


_PYTHON_IMAGE_REF = re.compile(r"\$\{?PYTHON_IMAGE\b")


def check_from_lines(project: Project) -> list[Finding]:
    """D105: FROM lines that do not take ${PYTHON_IMAGE}, or use it without declaring the ARG."""
    findings = []
    for service, dockerfile, parsed in _dockerfiles(project):
        rel = project.rel(dockerfile)
        global_args = {arg.name for arg in parsed.global_args}
        for from_ in parsed.froms:
            image = from_.image
            if image == "scratch" or parsed.stage_index(image, from_.stage) is not None:
                continue
            if _PYTHON_IMAGE_REF.search(image):
                if "PYTHON_IMAGE" not in global_args:
                    findings.append(
                        error(
                            rel,
                            from_.line,
                            "D105",
                            f"service {service.name}: FROM {image} uses PYTHON_IMAGE but no "
                            "`ARG PYTHON_IMAGE` comes before the first FROM, so it expands to nothing and "
                            "the build fails",
                            "put `ARG PYTHON_IMAGE=python:3.11-slim` on the first line",
                        )
                    )
                continue
            resolved = parsed.base_image(from_) or image
            standin = standin_replacing(resolved)
            if standin is not None:
                problem = (
                    f"FROM {image} does not take PYTHON_IMAGE, so INTEGRATION_PYTHON_IMAGE never reaches "
                    f"it; where {resolved} cannot be pulled the build runs on a copy of the Dockerfile that "
                    f"names the offline stand-in {standin.image} instead"
                )
            else:
                problem = (
                    f"FROM {image} does not take PYTHON_IMAGE and no offline stand-in replaces "
                    f"{resolved}, so the build fails where no registry can be reached"
                )
            if standin is not None:
                # It builds here as it is: the repository's Dockerfile is its own, nothing to fix.
                findings.append(
                    info(
                        rel,
                        from_.line,
                        "D105",
                        f"service {service.name}: {problem}",
                        "It builds as it is; only if INTEGRATION_PYTHON_IMAGE should choose its base, start "
                        "it with `ARG PYTHON_IMAGE=python:3.11-slim` and `FROM ${PYTHON_IMAGE}`",
                    )
                )
                continue
            findings.append(
                warning(
                    rel,
                    from_.line,
                    "D105",
                    f"service {service.name}: {problem}",
                    "start the Dockerfile with `ARG PYTHON_IMAGE=python:3.11-slim` and "
                    f"`FROM ${{PYTHON_IMAGE}}`, or keep {resolved} on this machine (docker load)",
                )
            )
    return findings
