"""`python -m integration init` (integration.adopt) on copies of the two examples with their adoption
removed: the config it writes loads to the original adoption's values, the compose file is the same,
the harness skeleton imports and calls what the hand-written harnesses call; nothing is overwritten
without --force; bad input is one `error:` line. Pure: temporary folders and subprocesses, no Docker."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from integration.adopt import _integration_regions, _with_block, cmd_init
from integration.compose import render_compose
from integration.discovery import load_system
from integration.model import PortPlan, checkout_id
from integration.settings import load_config

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
SHORTENER = REPO / "examples" / "shortener"
IGNORED = shutil.ignore_patterns("__pycache__", ".integration", ".pytest_cache")
RUFF = Path(sys.executable).with_name("ruff")
MOCK_FIXTURE = "@pytest.fixture\ndef test_harness():\n    return MockTestHarness()\n"


def rendered(system) -> dict:
    """The compose file of `system`, with its checkout's id taken out of the default image tags: a copy
    in another folder is another checkout, whose images are its own."""
    text = json.dumps(render_compose(system, plan(system))).replace(checkout_id(system.root), "<checkout>")
    return json.loads(text)


def strip_shop(tmp_path: Path) -> Path:
    """A copy of the shop as it was before its adoption: no [tool.integration] tables, no real harness."""
    root = tmp_path / "shop"
    shutil.copytree(SHOP, root, ignore=IGNORED)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    start = text.index("# The service-integration toolkit")
    pyproject.write_text(text[:start].rstrip("\n") + "\n")
    assert "integration" not in tomllib.loads(pyproject.read_text()).get("tool", {})
    (root / "tests" / "use_cases" / "real_harness.py").unlink()
    return root


def strip_shortener(tmp_path: Path) -> Path:
    root = tmp_path / "shortener"
    shutil.copytree(SHORTENER, root, ignore=IGNORED)
    (root / "use_case_tests" / "real_harness.py").unlink()
    return root


def run_init(root: Path, capsys: pytest.CaptureFixture[str], *, force: bool = False) -> tuple[int, str, str]:
    status = cmd_init(argparse.Namespace(root=str(root), force=force))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def plan(system) -> PortPlan:
    ports: dict[str, dict[int, int]] = {"broker": {5672: 1, 15672: 2}}
    for i, spec in enumerate(system.services):
        ports[spec.name] = {spec.port: 100 + i}
        ports[spec.db_service] = {5432: 200 + i}
    return PortPlan(ports)


def ruff_problems(path: Path, root: Path) -> str:
    """What ruff says about a generated file (the repository's rules, run from the system's root as its
    authors would), '' when it is clean."""
    if not RUFF.exists():
        pytest.skip("ruff is not installed next to this interpreter")
    rules = ["--isolated", "--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "110"]
    check = subprocess.run([str(RUFF), "check", *rules, str(path)], capture_output=True, text=True, cwd=root)
    form = subprocess.run(
        [str(RUFF), "format", "--isolated", "--line-length", "110", "--check", str(path)],
        capture_output=True,
        text=True,
    )
    return ("" if check.returncode == 0 else check.stdout) + ("" if form.returncode == 0 else form.stdout)


# What a harness's methods do, recorded in a subprocess (each example has its own `architecture`).
RECORDER = """
import asyncio, importlib, json, re, sys
sys.path.insert(0, sys.argv[1])
import integration
module, name = sys.argv[2].split(":")
cls = getattr(importlib.import_module(module), name)
assert issubclass(cls, integration.RealServiceHarness), cls.__mro__
harness = object.__new__(cls)
calls = []

class Answer:
    headers = {"location": "https://example.com/target"}

def call(service, method, path, model=None, **kwargs):
    shown = model.__name__ if isinstance(model, type) else re.sub(r"\\b\\w+\\.", "", str(model))
    calls.append([service, method, path, None if model is None else shown, kwargs])

def request(service, method, path, **kwargs):
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    calls.append(["request", service, method, path, kwargs])
    return Answer()

harness.call = call
harness.request = request
harness.publish_event = lambda event, **kw: calls.append(["publish", type(event).__name__])
for line in sys.argv[3:]:
    method, args = line.split(" ", 1)
    value = eval(args, vars(importlib.import_module("architecture.contracts.events")))
    result = asyncio.run(getattr(harness, method)(*value))
    if result is not None:
        calls.append(["returned", result])
print(json.dumps(calls))
"""


def record(root: Path, harness: str, *steps: str) -> list:
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, str(root), harness, *steps],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


SHOP_STEPS = (
    "set_stock ('mug', 5)",
    "get_stock ('mug',)",
    "place_order ('mug', 2)",
    "get_order ('o-1',)",
    "list_orders ()",
    "cancel_order ('o-1',)",
    "redeliver_event (OrderCancelled(order_id='o-1', sku='mug', quantity=2),)",
)


# --- the shop: its own conventions ------------------------------------------------------------------------


def test_the_shops_inferred_config_is_its_adoption(tmp_path, capsys):
    root = strip_shop(tmp_path)
    status, out, err = run_init(root, capsys)
    assert status == 0, err
    assert err == ""
    original, inferred = load_config(SHOP), load_config(root)
    assert inferred.credentials == original.credentials
    for service in ("orders", "inventory"):
        assert inferred.wiring_for(service) == original.wiring_for(service), service
    assert inferred.events == original.events
    assert inferred.tests == original.tests == "tests/use_cases"
    assert inferred.real_harness == "tests.use_cases.real_harness:RealServiceHarness"
    # every value says where it came from
    block = (root / "pyproject.toml").read_text().split("[tool.integration]", 1)[1]
    for line in block.splitlines():
        if "=" in line and not line.startswith("#"):
            assert "  # " in line, line
    assert "services/orders/app/settings.py:8" in block  # ORDERS_DSN
    # what it printed: one line per fact, with where it was found
    assert (
        "orders: database URL in ORDERS_DSN (services/orders/app/settings.py:8, default "
        "postgresql://shop:...@localhost:5432/orders)" in out
    )
    assert (
        "inventory: database host in DB_HOST (services/inventory/app/config.py:13, default localhost)" in out
    )
    assert "orders: calls inventory through INVENTORY_API" in out
    assert "shop-secret" not in out
    assert "wrote:\n  pyproject.toml: [tool.integration]" in out
    assert "tests/use_cases/real_harness.py: class RealServiceHarness, 7 of 7 methods mapped" in out


def test_the_shops_compose_file_is_the_same_as_with_its_adoption(tmp_path, capsys):
    root = strip_shop(tmp_path)
    assert run_init(root, capsys)[0] == 0
    original, inferred = load_system(SHOP), load_system(root)
    assert rendered(inferred) == rendered(original)


def test_the_shops_skeleton_imports_passes_ruff_and_calls_what_its_harness_calls(tmp_path, capsys):
    root = strip_shop(tmp_path)
    assert run_init(root, capsys)[0] == 0
    generated = root / "tests" / "use_cases" / "real_harness.py"
    text = generated.read_text()
    assert "NotImplementedError" not in text
    assert "class RealServiceHarness(RealServiceHarnessBase):" in text
    for provided in ("def reset", "def get_published_events", "def wait_for_events_processed"):
        assert provided not in text
    assert ruff_problems(generated, root) == ""
    calls = record(root, "tests.use_cases.real_harness:RealServiceHarness", *SHOP_STEPS)
    assert calls == record(SHOP, "tests.use_cases.real_harness:RealShopHarness", *SHOP_STEPS)
    assert calls[0] == [
        "inventory",
        "PUT",
        "/stock/mug",
        "StockLevel",
        {"json": {"sku": "mug", "quantity": 5}},
    ]
    assert calls[-1] == ["publish", "OrderCancelled"]


def test_the_shops_mock_tests_still_pass_after_init(tmp_path, capsys):
    root = strip_shop(tmp_path)
    assert run_init(root, capsys)[0] == 0
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "26 passed" in result.stdout


# --- the shortener: the toolkit's conventions ------------------------------------------------------------


def test_the_shortener_needs_nothing_but_its_harness(tmp_path, capsys):
    root = strip_shortener(tmp_path)
    status, out, err = run_init(root, capsys)
    assert status == 0, err
    data = tomllib.loads((root / "integration.toml").read_text())
    assert data == {"real_harness": "use_case_tests.real_harness:RealServiceHarness"}
    original, inferred = load_system(SHORTENER), load_system(root)
    assert rendered(inferred) == rendered(original)
    assert "conventional variables read" in out
    assert "the fixture `real_harness_class` returns RealServiceHarness (the one written)" in out


def test_the_shorteners_skeleton_maps_every_method(tmp_path, capsys):
    root = strip_shortener(tmp_path)
    assert run_init(root, capsys)[0] == 0
    generated = root / "use_case_tests" / "real_harness.py"
    assert "NotImplementedError" not in generated.read_text()
    assert ruff_problems(generated, root) == ""
    calls = record(
        root,
        "use_case_tests.real_harness:RealServiceHarness",
        "create_link ('https://example.com/a',)",
        "create_link ('https://example.com/a', 'abc')",
        "get_link ('abc',)",
        "delete_link ('abc',)",
        "list_links ()",
        "visit ('abc',)",
        "get_stats ('abc',)",
        "top_links (3,)",
        "redeliver_event (LinkVisited(code='abc', url='https://example.com/a'),)",
    )
    assert calls == [
        ["links", "POST", "/links", "LinkResponse", {"json": {"url": "https://example.com/a"}}],
        [
            "links",
            "POST",
            "/links",
            "LinkResponse",
            {"json": {"url": "https://example.com/a", "code": "abc"}},
        ],
        ["links", "GET", "/links/abc", "LinkResponse", {}],
        ["links", "DELETE", "/links/abc", None, {}],
        ["links", "GET", "/links", "list[LinkResponse]", {}],
        ["request", "links", "GET", "/abc", {"expected": [307]}],
        ["returned", "https://example.com/target"],
        ["analytics", "GET", "/stats/abc", "LinkStats", {}],
        ["analytics", "GET", "/stats", "list[LinkStats]", {"params": {"limit": 3}}],
        ["publish", "LinkVisited"],
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]  # its conftest imports the generated class
    assert "43 passed" in result.stdout


# --- nothing is overwritten without --force ----------------------------------------------------------------


@pytest.mark.parametrize("strip", [strip_shop, strip_shortener], ids=["shop", "shortener"])
def test_a_second_run_changes_nothing_and_force_rewrites(tmp_path, capsys, strip):
    root = strip(tmp_path)
    assert run_init(root, capsys)[0] == 0
    first = snapshot(root)

    status, out, err = run_init(root, capsys)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "--force" in err
    config = "pyproject.toml" if (root / "pyproject.toml").exists() else "integration.toml"
    assert err.startswith(f"error: {config}: ")
    assert snapshot(root) == first

    harness = next(p for p in root.rglob("real_harness.py"))
    harness.write_text("# edited by hand\n")
    (root / config).write_text((root / config).read_text().replace('real_harness = "', 'real_harness = "x'))
    status, out, err = run_init(root, capsys, force=True)
    assert status == 0, err
    assert "(replaced)" in out
    assert snapshot(root) == first


def test_force_replaces_the_original_block_and_keeps_the_rest_byte_for_byte(tmp_path, capsys):
    root = tmp_path / "shop"
    shutil.copytree(SHOP, root, ignore=IGNORED)
    before = (root / "pyproject.toml").read_text()
    status, _, err = run_init(root, capsys)
    assert status == 2
    assert "pyproject.toml: has a [tool.integration] table, and tests/use_cases/real_harness.py exists" in err

    assert run_init(root, capsys, force=True)[0] == 0
    after = (root / "pyproject.toml").read_text()
    head = before[: before.index("# The service-integration toolkit")]
    assert after.startswith(head)
    assert after.count("[tool.integration]") == 1
    assert load_config(root).wiring_for("inventory") == load_config(SHOP).wiring_for("inventory")


def test_the_block_is_replaced_where_it_is_and_the_next_tables_comments_stay():
    text = textwrap.dedent(
        """\
        [project]
        name = "x"

        # ours
        [tool.integration]
        tests = "t"

        [tool.integration.events]
        outbox_table = "x"
        # still ours

        # the linter's
        [tool.ruff]
        line-length = 100

        [tool.integration.services.a]
        port = 1
        """
    )
    new = _with_block(text, "[tool.integration]\nNEW = 1\n")
    assert new == textwrap.dedent(
        """\
        [project]
        name = "x"

        [tool.integration]
        NEW = 1

        # the linter's
        [tool.ruff]
        line-length = 100

        """
    )
    assert len(_integration_regions(text)) == 2
    assert _with_block('[project]\nname = "x"\n', "[tool.integration]\n") == (
        '[project]\nname = "x"\n\n[tool.integration]\n'
    )


# --- what is left to do -----------------------------------------------------------------------------------


def test_a_conftest_fixture_that_gives_the_mock_is_named_with_the_lines_to_change(tmp_path, capsys):
    root = strip_shop(tmp_path)
    conftest = root / "tests" / "use_cases" / "conftest.py"
    text = conftest.read_text()
    start = text.index("@pytest.fixture\ndef test_harness(request):")
    conftest.write_text(text[:start] + MOCK_FIXTURE)
    status, out, _ = run_init(root, capsys)
    assert status == 0
    todo = out.split("to do:\n", 1)[1]
    assert (
        "tests/use_cases/conftest.py:22: the fixture `test_harness` gives the mock also with --integration"
        in todo
    )
    assert 'request.getfixturevalue("integration_test_harness")' in todo
    assert "      22 - def test_harness():\n      22 + def test_harness(request):" in todo
    assert "      23 -     return MockTestHarness()" in todo
    assert '      23 +     if request.config.getoption("integration"):' in todo


def test_a_method_without_a_route_is_left_to_write_by_hand(tmp_path, capsys):
    root = strip_shop(tmp_path)
    protocol = root / "tests" / "use_cases" / "harness.py"
    method = (
        "\n    async def audit_warehouse(self, warehouse_code: str, strict: bool = False) -> StockLevel:\n"
    )
    protocol.write_text(protocol.read_text() + method + "        ...\n")
    status, out, _ = run_init(root, capsys)
    assert status == 0
    generated = root / "tests" / "use_cases" / "real_harness.py"
    text = generated.read_text()
    assert "# TODO(init):" in text
    assert (
        'raise NotImplementedError(\n            "init could not map this to a route: no route matches'
        in text
    )
    assert "7 of 8 methods mapped" in out
    assert "write audit_warehouse() by hand" in out
    assert ruff_problems(generated, root) == ""
    result = subprocess.run(
        [sys.executable, "-c", "import tests.use_cases.real_harness"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- facts services.yml lacks, and other layouts ------------------------------------------------------------


def test_a_port_nobody_declares_is_read_from_the_dockerfiles_command(tmp_path, capsys):
    root = strip_shortener(tmp_path)
    services = root / "architecture" / "services.yml"
    services.write_text(services.read_text().replace("    port: 8000\n", ""))
    for dockerfile in root.glob("services/*/Dockerfile"):
        dockerfile.write_text(dockerfile.read_text().replace("EXPOSE 8000\n", ""))
    status, out, err = run_init(root, capsys)
    assert status == 0, err
    assert "links: port 8000 (services/links/Dockerfile:19" in out
    assert [s.port for s in load_system(root).services] == [8000, 8000]


FACTORY = {
    "architecture/__init__.py": "",
    "architecture/contracts/__init__.py": "",
    "architecture/contracts/maker.py": """\
        from pydantic import BaseModel


        class ThingMade(BaseModel):
            event_id: str
            thing_id: str


        class Thing(BaseModel):
            thing_id: str
            colour: str


        class MakeThing(BaseModel):
            colour: str
            size: int = 1


        EVENTS_PUBLISHED = [ThingMade]
    """,
    "architecture/contracts/taker.py": """\
        from architecture.contracts.maker import ThingMade

        EVENTS_CONSUMED = [ThingMade]
    """,
    "architecture/services.yml": """\
        name: factory
        services:
          maker: {http: {port: 9000}, db: maker}
          taker: {db: taker}
    """,
    "services/maker/Dockerfile": """\
        FROM python:3.11-slim
        COPY architecture/ architecture/
        COPY services/maker/src/ src/
        EXPOSE 9000
    """,
    "services/maker/src/settings.py": """\
        from pydantic_settings import BaseSettings, SettingsConfigDict


        class Settings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="MAKER_")

            db_url: str = "postgresql+asyncpg://maker:m4ker@db:5432/maker?ssl=off"
            amqp: str = "amqp://guest:guest@localhost/"
    """,
    "services/maker/src/api.py": """\
        from fastapi import APIRouter, status

        from architecture.contracts.maker import MakeThing, Thing

        router = APIRouter(prefix="/things")


        @router.post("", status_code=status.HTTP_202_ACCEPTED)
        async def make(body: MakeThing) -> Thing: ...


        @router.get("/{thing_id}")
        async def one(thing_id: str) -> Thing: ...
    """,
    "services/maker/src/tables.py": """\
        import sqlalchemy as sa

        meta = sa.MetaData()
        events = sa.Table(
            "event_outbox",
            meta,
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("topic", sa.Text),
            sa.Column("data", sa.JSON),
            sa.Column("timestamp", sa.DateTime),
            sa.Column("dispatched_at", sa.DateTime),
        )
    """,
    "services/taker/Dockerfile": "FROM python:3.11-slim\nCOPY . .\nEXPOSE 9001\n",
    "services/taker/main.py": """\
        import os
        from os import environ as env

        DSN = env["TAKER_DATABASE_URL"]
        MAKER = os.environ.get("MAKER_URL") or "http://localhost:9000"
        RABBIT = env.get("RABBITMQ_HOST", "localhost")
        EXCHANGE = os.getenv("EXCHANGE_NAME", "factory.events")
        TOKEN = os.environ["API_TOKEN"]

        SQL = "CREATE TABLE IF NOT EXISTS consumed_events (event_key TEXT PRIMARY KEY, at TIMESTAMPTZ)"
    """,
    "qa/protocols.py": """\
        from typing import Protocol

        from architecture.contracts.maker import Thing


        class FactoryHarness(Protocol):
            async def make_thing(self, colour: str) -> Thing: ...

            async def get_thing(self, thing_id: str) -> Thing: ...

            async def reset(self) -> None: ...
    """,
    "qa/__init__.py": "",
    "qa/test_things.py": """\
        from qa.protocols import FactoryHarness


        async def test_one(test_harness: FactoryHarness) -> None: ...
    """,
    "qa/conftest.py": """\
        import pytest


        @pytest.fixture
        def factory_mock():
            return MockFactory()
    """,
}


def test_another_layout_is_read_as_it_is(tmp_path, capsys):
    for name, text in FACTORY.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    status, out, err = run_init(tmp_path, capsys)
    assert status == 0, err
    config = load_config(tmp_path)
    maker, taker = config.wiring_for("maker"), config.wiring_for("taker")
    assert maker.database_url_variable == "MAKER_DB_URL"
    assert (
        maker.database_url_format
        == "postgresql+asyncpg://{db_user}:{db_password}@{db_host}:{db_port}/{db_name}?ssl=off"
    )
    assert maker.broker_url_variable == "MAKER_AMQP"
    assert (config.credentials.user, config.credentials.password) == ("maker", "m4ker")
    assert taker.database_url_variable == "TAKER_DATABASE_URL"
    assert taker.broker_url_variable is None and taker.environment["RABBITMQ_HOST"] == "{broker_host}"
    assert taker.environment["EXCHANGE_NAME"] == "{exchange}"
    assert config.exchange == "factory.events"  # services.yml names none
    assert config.services["taker"].calls == ("maker",)
    assert config.wiring.conventional is False
    assert config.events.outbox_table == "event_outbox"
    assert config.events.outbox.event_id == "id" and config.events.outbox.payload == "data"
    assert config.events.outbox.event_type == "topic" and config.events.outbox.published_at == "dispatched_at"
    assert config.events.outbox.occurred_at == "timestamp"
    assert (config.events.processed_table, config.events.processed_event_id) == (
        "consumed_events",
        "event_key",
    )
    assert (config.tests, config.harness_fixture, config.mock_fixture) == (
        "qa",
        "test_harness",
        "factory_mock",
    )
    assert config.real_harness == "qa.real_harness:RealServiceHarness"
    system = load_system(tmp_path)
    assert system.exchange == "factory.events"
    assert "taker: services/taker/main.py:8 reads API_TOKEN with no default" in out

    text = (tmp_path / "qa" / "real_harness.py").read_text()
    assert "json=body, expected=(202,)" in text and 'f"/things/{thing_id}"' in text
    assert "def reset" not in text
    assert ruff_problems(tmp_path / "qa" / "real_harness.py", tmp_path) == ""


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda r: (r / "architecture/services.yml").write_text("services: [\n"), "not valid YAML"),
        (lambda r: (r / "architecture/services.yml").unlink(), "file not found"),
        (
            lambda r: (r / "services/orders/app/settings.py").write_text("import os\nX = (\n"),
            "services/orders/app/settings.py: not valid Python",
        ),
        (
            lambda r: (r / "services/inventory/Dockerfile").write_text('FROM python\nCOPY "a b\n'),
            "services/inventory/Dockerfile",
        ),
        (lambda r: (r / "pyproject.toml").write_text("[project\n"), "pyproject.toml"),
        (
            lambda r: (r / "tests/use_cases/harness.py").write_bytes(
                (r / "tests/use_cases/harness.py").read_bytes() + b"# \xff\n"
            ),
            "tests/use_cases/harness.py: not UTF-8",
        ),
        (
            lambda r: (r / "architecture/contracts/orders.py").write_text("raise RuntimeError('no')\n"),
            "importing the contract failed",
        ),
    ],
    ids=["yaml", "no-services-file", "python", "dockerfile", "pyproject", "encoding", "contract"],
)
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, capsys, break_it, expected):
    root = strip_shop(tmp_path)
    break_it(root)
    before = snapshot(root)
    status, out, err = run_init(root, capsys)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err
    assert "Traceback" not in err
    assert snapshot(root) == before


def _mutate(text: str, rng: random.Random) -> str:
    position = rng.randrange(len(text) + 1)
    choice = rng.randrange(4)
    if choice == 0:
        return text[:position] + rng.choice("()[]{}:=,'\"#\n\t .\\@*") + text[position:]
    if choice == 1:
        return text[:position] + text[position + rng.randrange(1, 6) :]
    if choice == 2:
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        return "".join(lines[:i] + lines[i + 1 :])
    return (
        text[:position]
        + rng.choice(["os.environ[", "@app.get(", "Table(", "__tablename__ = 1\n"])
        + text[position:]
    )


@pytest.mark.parametrize(
    "target",
    [
        "architecture/services.yml",
        "services/inventory/app/config.py",
        "services/orders/app/main.py",
        "services/orders/app/tables.py",
        "tests/use_cases/harness.py",
        "tests/use_cases/conftest.py",
    ],
)
def test_mutated_inputs_end_in_an_adoption_or_one_error_line(tmp_path, capsys, target):
    root = strip_shop(tmp_path)
    original = (root / target).read_text()
    pristine = snapshot(root)
    rng = random.Random(f"init-{target}")
    outcomes = {0: 0, 2: 0}
    for _ in range(25):
        text = original
        for _ in range(rng.randrange(1, 3)):
            text = _mutate(text, rng)
        (root / target).write_text(text)
        status, out, err = run_init(root, capsys, force=True)
        assert status in outcomes, (status, err)
        outcomes[status] += 1
        if status == 2:
            assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        else:
            assert err == "" and "wrote:" in out
            load_config(root)  # what it wrote loads
        for name in ("pyproject.toml", "tests/use_cases/real_harness.py"):
            path = root / name
            if name in pristine:
                path.write_bytes(pristine[name])
            elif path.exists():
                path.unlink()
    assert outcomes[0] and outcomes[2], outcomes
