"""The doctor's static checks on a copy of the bundled example, one seeded fault at a time; no Docker."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from integration.discovery import load_system
from integration.doctor import (
    LIVE_CHECKS,
    STATIC_CHECKS,
    Finding,
    LiveContext,
    live_findings,
    load_project,
    run_doctor,
    static_findings,
)
from integration.doctor.dockerfiles import parse_dockerfile
from integration.doctor.harness import check_http_clients
from integration.doctor.imports import check_function_imports
from integration.doctor.live import check_ports, check_substituted_bases, orphaned_pytest_processes
from integration.ports import DEFAULT_BASE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shortener"
LINKS_MAIN = "services/links/app/main.py"
ANALYTICS_MAIN = "services/analytics/app/main.py"
LINKS_DOCKERFILE = "services/links/Dockerfile"
LINE_FORMAT = re.compile(r"^(error|warning) \S+?(:\d+)?: .+\. Fix: .+$")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh copy of the example system."""
    copy = tmp_path / "shortener"
    shutil.copytree(
        EXAMPLE,
        copy,
        ignore=shutil.ignore_patterns("__pycache__", ".integration", "compose", ".pytest_cache", ".venv"),
    )
    return copy


def line_of(path: Path, fragment: str, start: int = 1) -> int:
    """Number of the first line at or after `start` that contains `fragment`."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if number >= start and fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in {path}")


def replace_line(path: Path, starts_with: str, new: str | None) -> int:
    """Replace (or with None delete) the one line that starts with `starts_with`; returns its number."""
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip().startswith(starts_with)]
    assert len(hits) == 1, f"{starts_with!r} in {path}: {len(hits)} lines"
    if new is None:
        del lines[hits[0]]
    else:
        lines[hits[0]] = new + "\n"
    path.write_text("".join(lines))
    return hits[0] + 1


def with_code(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def errors(findings: list[Finding]) -> list[str]:
    return [f.render() for f in findings if f.severity == "error"]


# --- the unmodified example --------------------------------------------------------------------------------


def test_example_copy_has_no_errors(root: Path) -> None:
    assert (root / LINKS_MAIN).is_file(), "the example's services are not there"

    findings = static_findings(root)

    assert errors(findings) == []


def test_example_passes_the_static_doctor(root: Path) -> None:
    lines: list[str] = []

    status = run_doctor(root, live=False, report=lines.append)

    assert status == 0, lines
    assert lines[-1].startswith("doctor: 0 errors")


# --- D101: catch-all before the health route ---------------------------------------------------------------


def _move_function_to_end(path: Path, name: str) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = min([function.lineno, *(d.lineno for d in function.decorator_list)])
    lines = text.splitlines(keepends=True)
    block = lines[first - 1 : function.end_lineno]
    del lines[first - 1 : function.end_lineno]
    path.write_text("".join(lines).rstrip("\n") + "\n\n\n" + "".join(block))


def test_health_route_after_catch_all_is_an_error(root: Path) -> None:
    main = root / LINKS_MAIN
    _move_function_to_end(main, "health")
    catch_all = line_of(main, '@app.get("/{code}")')
    health = line_of(main, '@app.get("/health")')
    assert health > catch_all

    found = with_code(static_findings(root), "D101")

    assert [(f.severity, f.path, f.line) for f in found] == [("error", LINKS_MAIN, catch_all)]
    assert f"{LINKS_MAIN}:{health}" in found[0].message
    assert errors(static_findings(root)) == [found[0].render()]


def test_catch_all_of_a_router_included_at_root_before_health_is_an_error(root: Path) -> None:
    main = root / LINKS_MAIN
    (root / "services/links/app/fallback.py").write_text(
        "from fastapi import APIRouter\n\nrouter = APIRouter()\n\n\n"
        '@router.get("/{rest:path}")\ndef fallback(rest: str) -> dict[str, str]:\n    return {"path": rest}\n'
    )
    text = main.read_text()
    text = text.replace(
        "from app.db import", "from app.fallback import router as fallback_router\nfrom app.db import"
    )
    text = text.replace("\nSessionDep =", "\napp.include_router(fallback_router)\nSessionDep =", 1)
    main.write_text(text)

    found = with_code(static_findings(root), "D101")

    assert [(f.path, f.line) for f in found] == [("services/links/app/fallback.py", 6)]
    health = line_of(main, '@app.get("/health")')
    assert f"{LINKS_MAIN}:{health}" in found[0].message


def test_routes_that_cannot_match_the_health_path_are_fine(root: Path) -> None:
    main = root / LINKS_MAIN
    text = main.read_text().replace(
        "\nSessionDep =",
        '\n\n@app.get("/{n:int}")\ndef number(n: int) -> int:\n    return n\n\n\nSessionDep =',
        1,
    )
    main.write_text(text)

    assert with_code(static_findings(root), "D101") == []


# --- D102: function-level imports --------------------------------------------------------------------------


def test_function_level_import_after_a_use_is_an_error(root: Path) -> None:
    main = root / LINKS_MAIN
    health = line_of(main, "def health(")
    earlier_use = line_of(main, "status.HTTP_503", start=health)
    ok_line = line_of(main, 'return JSONResponse({"status": "ok"})', start=health)
    lines = main.read_text().splitlines(keepends=True)
    lines.insert(ok_line - 1, "    from fastapi import status\n")
    main.write_text("".join(lines))

    found = with_code(static_findings(root), "D102")

    assert [(f.severity, f.path, f.line) for f in found] == [("error", LINKS_MAIN, ok_line)]
    assert f"{LINKS_MAIN}:{earlier_use}" in found[0].message
    assert "UnboundLocalError" in found[0].message


def test_function_level_import_shadowing_a_module_name_is_a_warning(tmp_path: Path) -> None:
    module = tmp_path / "tool.py"
    module.write_text(
        "import json\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from decimal import Decimal\n"
        "\n"
        "def dump(value):\n"
        "    import json\n"
        "    return json.dumps(value)\n"
        "\n"
        "def lazy():\n"
        "    from decimal import Decimal\n"
        "    import csv\n"
        "    return Decimal(1), csv\n"
    )

    found = check_function_imports(load_project(tmp_path))

    assert [(f.severity, f.path, f.line) for f in found] == [("warning", "tool.py", 7)]
    assert "line 1" in found[0].message


def test_use_in_a_comprehension_before_the_import_counts(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text(
        "def names(items):\n    out = [os.path.basename(i) for i in items]\n    import os\n    return out\n"
    )

    found = check_function_imports(load_project(tmp_path))

    assert [(f.severity, f.line) for f in found] == [("error", 3)]
    assert "tool.py:2" in found[0].message


# --- D103: architecture/ not in the image ------------------------------------------------------------------


def test_dockerfile_without_architecture_copy_is_an_error(root: Path) -> None:
    dockerfile = root / LINKS_DOCKERFILE
    replace_line(dockerfile, "COPY architecture", None)
    from_line = line_of(dockerfile, "FROM ")

    found = with_code(static_findings(root), "D103")

    assert [(f.severity, f.path, f.line) for f in found] == [("error", LINKS_DOCKERFILE, from_line)]
    assert "services/links/app/" in found[0].message
    assert "COPY architecture/" in found[0].fix


def test_architecture_copied_without_its_folder_name_is_an_error(root: Path) -> None:
    line = replace_line(root / LINKS_DOCKERFILE, "COPY architecture", "COPY architecture/ /srv/")

    found = with_code(static_findings(root), "D103")

    assert [(f.path, f.line) for f in found] == [(LINKS_DOCKERFILE, line)]


def test_copy_of_the_whole_root_brings_architecture(root: Path) -> None:
    dockerfile = root / LINKS_DOCKERFILE
    replace_line(dockerfile, "COPY architecture", "COPY . /srv/")

    assert with_code(static_findings(root), "D103") == []

    (root / ".dockerignore").write_text((root / ".dockerignore").read_text() + "architecture/\n")
    found = with_code(static_findings(root), "D103")
    assert [(f.path, f.line) for f in found] == [(LINKS_DOCKERFILE, line_of(dockerfile, "COPY . /srv/"))]


# --- D104: COPY sources relative to the Dockerfile ---------------------------------------------------------


def test_copy_source_relative_to_the_dockerfile_folder_is_an_error(root: Path) -> None:
    line = replace_line(
        root / LINKS_DOCKERFILE,
        "COPY services/links/requirements.txt",
        "COPY requirements.txt /srv/requirements.txt",
    )

    found = with_code(static_findings(root), "D104")

    assert [(f.severity, f.path, f.line) for f in found] == [("error", LINKS_DOCKERFILE, line)]
    assert "services/links/requirements.txt" in found[0].fix


def test_copy_source_that_exists_nowhere_is_an_error(root: Path) -> None:
    line = replace_line(
        root / LINKS_DOCKERFILE, "COPY services/links/app/", "COPY services/links/src/ /srv/app/"
    )

    found = with_code(static_findings(root), "D104")

    assert [(f.path, f.line) for f in found] == [(LINKS_DOCKERFILE, line)]
    assert "not in the build context" in found[0].message


# --- D105: FROM -------------------------------------------------------------------------------------------


def test_hard_coded_from_with_a_stand_in_is_a_note_not_a_warning(root: Path) -> None:
    # The repository's Dockerfile is its own: it builds here as it is, on the stand-in where need be.
    line = replace_line(root / LINKS_DOCKERFILE, "FROM ", "FROM python:3.11-slim")

    found = with_code(static_findings(root), "D105")

    assert [(f.severity, f.path, f.line) for f in found] == [("info", LINKS_DOCKERFILE, line)]


def test_hard_coded_from_without_a_stand_in_is_a_warning(root: Path) -> None:
    line = replace_line(root / LINKS_DOCKERFILE, "FROM ", "FROM python:3.9-alpine")

    found = with_code(static_findings(root), "D105")

    assert [(f.severity, f.path, f.line) for f in found] == [("warning", LINKS_DOCKERFILE, line)]


def test_python_image_without_its_arg_is_an_error(root: Path) -> None:
    dockerfile = root / LINKS_DOCKERFILE
    replace_line(dockerfile, "ARG PYTHON_IMAGE", None)

    found = with_code(static_findings(root), "D105")

    assert [(f.severity, f.line) for f in found] == [("error", line_of(dockerfile, "FROM "))]


# --- D106-D108: harness code -----------------------------------------------------------------------------


HARNESS_DB = '''"""Database access of a real harness."""

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def pooled(url: str):
    return create_engine(url)


def unpooled(url: str):
    return create_engine(url, poolclass=NullPool)


def reset(connection, tables: list[str]) -> None:
    connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
    connection.execute(text("DELETE FROM outbox_events"))
'''


def test_harness_engine_without_null_pool_and_truncate_are_errors(root: Path) -> None:
    harness = root / "use_case_tests" / "real_db.py"
    harness.write_text(HARNESS_DB)

    findings = static_findings(root)

    engines = with_code(findings, "D106")
    truncates = with_code(findings, "D108")
    assert [(f.severity, f.path, f.line) for f in engines] == [
        ("error", "use_case_tests/real_db.py", line_of(harness, "create_engine(url)"))
    ]
    assert [(f.severity, f.path, f.line) for f in truncates] == [
        ("error", "use_case_tests/real_db.py", line_of(harness, "TRUNCATE"))
    ]
    assert "DELETE FROM" in truncates[0].fix


def test_service_code_may_pool_and_docstrings_may_say_truncate(root: Path) -> None:
    # The services themselves pool connections (app/db.py): only harness code is checked.
    (root / "use_case_tests" / "notes.py").write_text(
        '"""Never TRUNCATE tables here: use DELETE FROM."""\n\nWHY = "TRUNCATE waits for an exclusive lock"\n'
    )

    findings = static_findings(root)

    assert with_code(findings, "D106") == [] and with_code(findings, "D108") == []


HARNESS_HTTP = """import httpx
from httpx import AsyncClient


class Leaky:
    def __init__(self) -> None:
        self.client = httpx.Client(base_url="http://127.0.0.1")


class Tidy:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client if client is not None else AsyncClient()
        self._clients: dict[str, httpx.AsyncClient] = {}

    def add(self, name: str) -> None:
        self._clients[name] = httpx.AsyncClient()

    async def aclose(self) -> None:
        await self._client.aclose()
        for client in self._clients.values():
            await client.aclose()


async def fetch(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url)).text


def one_shot(url: str) -> str:
    return httpx.Client().get(url).text
"""


def test_unclosed_http_clients_are_warnings(tmp_path: Path) -> None:
    harness = tmp_path / "use_case_tests" / "http.py"
    harness.parent.mkdir()
    harness.write_text(HARNESS_HTTP)

    found = check_http_clients(load_project(tmp_path))

    assert [(f.severity, f.path, f.line) for f in found] == [
        ("warning", "use_case_tests/http.py", line_of(harness, "httpx.Client(base_url")),
        ("warning", "use_case_tests/http.py", line_of(harness, "httpx.Client().get")),
    ]


# --- D109: no health route ---------------------------------------------------------------------------------


def test_renamed_health_route_is_an_error(root: Path) -> None:
    main = root / ANALYTICS_MAIN
    replace_line(main, '@app.get("/health")', '@app.get("/healthz")')

    found = with_code(static_findings(root), "D109")

    assert [(f.severity, f.path, f.line) for f in found] == [
        ("error", ANALYTICS_MAIN, line_of(main, "app = FastAPI("))
    ]
    assert "/health" in found[0].message


def test_renamed_health_route_behind_a_catch_all_names_the_catch_all(root: Path) -> None:
    main = root / LINKS_MAIN
    replace_line(main, '@app.get("/health")', '@app.get("/ready")')

    found = with_code(static_findings(root), "D109")

    assert [(f.path, f.line) for f in found] == [(LINKS_MAIN, line_of(main, "app = FastAPI("))]
    catch_all = line_of(main, '@app.get("/{code}")')
    assert f"{LINKS_MAIN}:{catch_all}" in found[0].message


def test_health_path_from_services_yml_is_the_one_checked(root: Path) -> None:
    services = root / "architecture" / "services.yml"
    text = services.read_text()
    services.write_text(text.replace("health: /health", "health: /healthz", 1))

    found = with_code(static_findings(root), "D109")

    assert [f.path for f in found] == [LINKS_MAIN]


# --- D110 and D100: services.yml, contracts, syntax --------------------------------------------------------


def test_services_file_error_is_a_finding_with_its_line(root: Path) -> None:
    services = root / "architecture" / "services.yml"
    line = line_of(services, "health: /health")
    services.write_text(services.read_text().replace("health: /health", "helth: /health", 1))

    findings = static_findings(root)

    found = with_code(findings, "D110")
    # services.yml is read, not owned: a key that looks like a typo of `health` is a warning.
    assert [(f.severity, f.path, f.line) for f in found] == [("warning", "architecture/services.yml", line)]
    assert "helth" in found[0].message and "health" in found[0].message and "strict" in found[0].fix
    # The other checks still run, with what could be read of services.yml.
    assert with_code(findings, "D101") == [] and with_code(findings, "D109") == []


def test_contract_import_failure_points_at_the_contract(root: Path) -> None:
    contract = root / "architecture" / "contracts" / "links.py"
    contract.write_text(contract.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    line = len(contract.read_text().splitlines())

    found = with_code(static_findings(root), "D110")

    assert [(f.path, f.line) for f in found] == [("architecture/contracts/links.py", line)]


def test_python_file_that_does_not_parse_is_an_error(root: Path) -> None:
    (root / "services/links/app/broken.py").write_text("def oops(:\n    pass\n")

    found = with_code(static_findings(root), "D100")

    assert [(f.severity, f.path, f.line) for f in found] == [("error", "services/links/app/broken.py", 1)]


# --- the report ------------------------------------------------------------------------------------------


def test_report_has_one_line_per_finding_then_a_summary(root: Path) -> None:
    replace_line(root / LINKS_DOCKERFILE, "FROM ", "FROM python:3.9-alpine")
    replace_line(
        root / LINKS_DOCKERFILE, "COPY services/links/requirements.txt", "COPY requirements.txt /srv/"
    )
    lines: list[str] = []

    status = run_doctor(root, live=False, report=lines.append)

    assert status == 1
    *findings, summary = lines
    assert len(findings) == 2
    assert all(LINE_FORMAT.match(line) for line in findings), findings
    assert findings[0].startswith(f"error {LINKS_DOCKERFILE}:")  # D104 is registered before D105
    assert findings[1].startswith(f"warning {LINKS_DOCKERFILE}:")
    assert summary.startswith("doctor: 1 error, 1 warning")


def test_registry_codes_are_unique_and_documented() -> None:
    import integration.doctor as doctor

    codes = [code for check in [*STATIC_CHECKS, *LIVE_CHECKS] for code in check.codes]

    assert len(codes) == len(set(codes))
    assert all(f"    {code}  " in (doctor.__doc__ or "") for code in codes)


def test_dockerfile_parser_keeps_start_lines_and_skips_heredocs() -> None:
    text = "ARG X=1\nFROM a \\\n  AS b\n# comment\nRUN <<EOF\nCOPY not-an-instruction .\nEOF\nCOPY x /y\n"

    parsed = [(i.line, i.keyword) for i in parse_dockerfile(text)]

    assert parsed == [(1, "ARG"), (2, "FROM"), (5, "RUN"), (8, "COPY")]


# --- live checks that need no engine -----------------------------------------------------------------------


def test_unreachable_engine_skips_the_live_checks(root: Path, tmp_path: Path) -> None:
    client = DockerClient(host=f"unix://{tmp_path}/no-such-engine.sock")

    found = live_findings(load_system(root), client=client, proc=tmp_path / "no-proc")

    assert [(f.severity, f.code) for f in found] == [("warning", "D201")]
    assert found[0].render().startswith("warning <docker>: live checks skipped:")


def test_taken_preferred_port_is_a_warning(root: Path, tmp_path: Path) -> None:
    ctx = LiveContext(load_system(root), proc=tmp_path, is_free=lambda port: port != DEFAULT_BASE + 1)

    found = check_ports(ctx)

    assert [(f.severity, f.path) for f in found] == [("warning", f"<port {DEFAULT_BASE + 1}>")]
    assert "links-db:5432" in found[0].message and "fall back" in found[0].message


def test_port_held_only_by_time_wait_says_so(root: Path, tmp_path: Path) -> None:
    # A base no real stack uses: the holder lookup also asks the engine which container publishes a port.
    base = 23100
    port = base + 10  # analytics:8000
    (tmp_path / "net").mkdir()
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
    )
    time_wait = [
        f"{n}: 0100007F:{port:04X} 0100007F:E3E{n} 06 00000000:00000000 03:00000DEB 00000000 0 0 0 3 0"
        for n in (0, 1)
    ]
    (tmp_path / "net" / "tcp").write_text("\n".join([header, *time_wait]) + "\n")
    ctx = LiveContext(load_system(root), proc=tmp_path, is_free=lambda p: p != port, port_base=base)

    found = check_ports(ctx)

    assert [f.path for f in found] == [f"<port {port}>"]
    assert "2 closed connections in TIME-WAIT" in found[0].message
    assert "60 s" in found[0].fix


def _fake_process(proc: Path, pid: int, ppid: int, argv: list[str]) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (folder / "status").write_text(f"Name:\t{Path(argv[0]).name}\nPid:\t{pid}\nPPid:\t{ppid}\n")


def test_orphaned_pytest_processes_are_found(tmp_path: Path) -> None:
    _fake_process(tmp_path, 4100, 1, ["/usr/bin/python3", "-m", "pytest", "use_case_tests"])
    _fake_process(tmp_path, 4200, 4100, ["/usr/bin/python3", "-m", "pytest", "-n", "2"])  # has a parent
    _fake_process(tmp_path, 4300, 1, ["/usr/bin/python3", "-m", "http.server"])  # not pytest
    _fake_process(tmp_path, 4400, 1, ["/usr/bin/vim", "test_pytest.py"])  # not python

    assert orphaned_pytest_processes(tmp_path) == [(4100, "/usr/bin/python3 -m pytest use_case_tests")]


# --- D107 / D112: clients and engines released through loops, containers, with and exit stacks -----------

HARNESS_CLIENTS = """import asyncio
import contextlib
from contextlib import ExitStack, closing

import httpx


class Pool:
    def __init__(self, names: list[str]) -> None:
        self.listed = [httpx.Client(), httpx.Client()]
        self.appended: list[httpx.Client] = []
        self.appended.append(httpx.Client())
        self.by_name: dict[str, httpx.Client] = {}
        for name in names:
            self.by_name[name] = httpx.Client(base_url=name)
        self.literal = {"a": httpx.Client(), "b": httpx.Client()}
        self.made = [httpx.Client() for _ in names]
        self.cached: dict[str, httpx.Client] = {}
        self.cached.setdefault("x", httpx.Client())
        self.stacked = [httpx.Client()]
        self.helped = [httpx.Client()]
        self.aclients: list[httpx.AsyncClient] = []
        self.aclients.append(httpx.AsyncClient())
        client = httpx.Client()
        self.aliased = client
        self.leaky = httpx.Client()  # leak
        self.bag: list[httpx.Client] = []
        self.bag.append(httpx.Client())  # leak
        self.idle = [httpx.Client()]  # leak

    def close(self) -> None:
        for c in self.listed:
            c.close()
        for client in self.appended:
            client.close()
        for _name, c in self.by_name.items():
            c.close()
        for c in self.literal.values():
            c.close()
        [c.close() for c in self.made]
        for c in list(self.cached.values()):
            c.close()
        while self.stacked:
            self.stacked.pop().close()
        _close_all(self.helped)
        self.aliased.close()
        for c in self.idle:
            print(c)  # iterated, never closed

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.aclients))


def _close_all(clients: list[httpx.Client]) -> None:
    for client in clients:
        client.close()


def with_a_variable() -> None:
    client = httpx.Client()
    with client:
        client.get("/")


def with_closing() -> None:
    with closing(httpx.Client()) as client:
        client.get("/")
    other = httpx.Client()
    with contextlib.closing(other):
        other.get("/")


def with_an_exit_stack(stack: ExitStack) -> httpx.Client:
    entered = stack.enter_context(httpx.Client())
    called_back = httpx.Client()
    stack.callback(called_back.close)
    pushed = httpx.Client()
    stack.push(pushed)
    return entered


def unpacked() -> None:
    first, second = httpx.Client(), httpx.Client()
    first.close()
    second.close()


def dropped(url: str) -> str:
    return len(httpx.Client().get(url).text) * "x"  # leak
"""

HARNESS_ENGINES = """from contextlib import ExitStack

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


class Databases:
    def __init__(self, urls: dict[str, str], stack: ExitStack) -> None:
        self.engines = {}
        for name, url in urls.items():
            self.engines[name] = create_engine(url, poolclass=NullPool)
        self.listed = [create_engine(u, poolclass=NullPool) for u in urls.values()]
        self.appended = []
        self.appended.append(create_engine("postgresql://a", poolclass=NullPool))
        self.async_engine = create_async_engine("postgresql+asyncpg://b", poolclass=NullPool)
        stacked = create_engine("postgresql://c", poolclass=NullPool)
        stack.callback(stacked.dispose)
        self.forgotten = create_engine("postgresql://d", poolclass=NullPool)  # leak
        self.kept = {}
        self.kept["x"] = create_engine("postgresql://e", poolclass=NullPool)  # leak

    async def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        [e.dispose() for e in self.listed]
        for engine in self.appended:
            engine.dispose()
        await self.async_engine.dispose()
        for engine in self.kept.values():
            engine.connect().close()  # closes a connection, not the engine


def handed_out(url: str):
    return create_engine(url, poolclass=NullPool)
"""


def leak_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("# leak")]


def test_clients_closed_through_loops_containers_with_and_exit_stacks_are_not_reported(
    tmp_path: Path,
) -> None:
    harness = tmp_path / "use_case_tests" / "clients.py"
    harness.parent.mkdir()
    harness.write_text(HARNESS_CLIENTS)

    found = check_http_clients(load_project(tmp_path))

    assert [f.line for f in found] == leak_lines(HARNESS_CLIENTS)
    assert {(f.severity, f.code, f.path) for f in found} == {("warning", "D107", "use_case_tests/clients.py")}


def test_engines_disposed_through_loops_containers_and_exit_stacks_are_not_reported(tmp_path: Path) -> None:
    harness = tmp_path / "use_case_tests" / "engines.py"
    harness.parent.mkdir()
    harness.write_text(HARNESS_ENGINES)

    findings = static_findings(tmp_path)

    found = with_code(findings, "D112")
    assert [f.line for f in found] == leak_lines(HARNESS_ENGINES)
    assert all(f.severity == "warning" and "dispose" in f.fix for f in found)
    assert with_code(findings, "D106") == [], "every engine here is a NullPool one"


def test_the_seeded_engine_faults_are_still_found(root: Path) -> None:
    harness = root / "use_case_tests" / "real_db.py"
    harness.write_text(HARNESS_DB + "\n\nENGINE = create_engine('postgresql://x', poolclass=NullPool)\n")

    findings = static_findings(root)

    assert [f.line for f in with_code(findings, "D112")] == [line_of(harness, "ENGINE = create_engine")]
    assert [f.line for f in with_code(findings, "D106")] == [line_of(harness, "create_engine(url)")]


# --- D111: Dockerfiles the reader refuses; D105's wording; D207 ------------------------------------------


def test_dockerfile_that_does_not_parse_is_an_error_with_its_line(root: Path) -> None:
    line = replace_line(
        root / LINKS_DOCKERFILE, "COPY architecture", "COPPY architecture/ /srv/architecture/"
    )

    findings = static_findings(root)

    found = with_code(findings, "D111")
    assert [(f.severity, f.path, f.line) for f in found] == [("error", LINKS_DOCKERFILE, line)]
    assert "unknown instruction 'COPPY'" in found[0].message and "did you mean COPY" in found[0].message
    assert [f.code for f in findings if f.path == LINKS_DOCKERFILE] == ["D111"], "no guesses from a bad file"


def test_hard_coded_from_names_the_standin_it_is_built_on_or_says_there_is_none(root: Path) -> None:
    line = replace_line(root / LINKS_DOCKERFILE, "FROM ", "FROM python:3.11-slim")
    replace_line(root / "services/analytics/Dockerfile", "FROM ", "FROM node:20-slim")

    found = {f.path: f for f in with_code(static_findings(root), "D105")}

    assert found[LINKS_DOCKERFILE].line == line
    assert "integration-local/python:3.11-slim" in found[LINKS_DOCKERFILE].message
    assert "no offline stand-in" in found["services/analytics/Dockerfile"].message


def test_a_substituted_from_is_an_informational_finding(root: Path) -> None:
    from integration.images import ImageState
    from integration.substitution import Substitution

    system = load_system(root)
    substitution = Substitution(1, 1, "python:3.11-slim", "integration-local/python:3.11-slim")
    states = [ImageState("links", "links:test", None, "sha256:1", True, substitutions=(substitution,))]  # type: ignore[arg-type]
    ctx = LiveContext(system, _image_states=states)

    found = check_substituted_bases(ctx)

    assert [(f.severity, f.code, f.path, f.line) for f in found] == [("info", "D207", LINKS_DOCKERFILE, 1)]
    assert (
        found[0]
        .render()
        .startswith(
            f"info {LINKS_DOCKERFILE}:1: links: FROM python:3.11-slim (line 1) built on the offline stand-in "
            "integration-local/python:3.11-slim"
        )
    )
    assert "docker pull python:3.11-slim" in found[0].render()
