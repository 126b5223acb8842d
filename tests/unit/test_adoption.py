"""Reading repositories as they are: services.yml under other layouts, the toolkit's own config, the
wiring of variables the services' authors named. Pure: files in a temporary folder, no Docker."""

from __future__ import annotations

import random
import shutil
import textwrap
from pathlib import Path

import pytest

from integration.compose import render_compose
from integration.discovery import load_system
from integration.errors import ConfigError
from integration.model import PortPlan
from integration.settings import load_config
from integration.wiring import check_template, service_environment

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
SHORTENER = REPO / "examples" / "shortener"
DOCKERFILE = "FROM python:3.11-slim\nEXPOSE 9000\n"
CONTRACT = """\
from typing import ClassVar

from pydantic import BaseModel


class ThingMade(BaseModel):
    routing_key: ClassVar[str] = "thing.made"
    event_id: str


class ThingGone(BaseModel):
    event_id: str


PUBLISHED = [ThingMade, ThingGone]
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def system_at(tmp_path: Path, services_yml: str, pyproject: str = "", **extra: str) -> Path:
    files = {
        "architecture/__init__.py": "",
        "architecture/contracts/__init__.py": "",
        "architecture/contracts/maker.py": CONTRACT,
        "architecture/services.yml": services_yml,
        "services/maker/Dockerfile": DOCKERFILE,
        "services/taker/Dockerfile": DOCKERFILE,
    }
    if pyproject:
        files["pyproject.toml"] = pyproject
    files.update(extra)
    return write(tmp_path, files)


def plan(system) -> PortPlan:
    ports: dict[str, dict[int, int]] = {"broker": {5672: 1, 15672: 2}}
    for i, spec in enumerate(system.services):
        ports[spec.name] = {spec.port: 100 + i}
        ports[spec.db_service] = {5432: 200 + i}
        ports[f"{spec.name}-gw1"] = {spec.port: 300 + i}
    return PortPlan(ports)


FOREIGN = """\
# read by the deploy tooling too
name: factory
owner: team-x
broker:
  exchange: factory.events
services:
  maker:
    description: makes things
    http: {port: 8080, health: /healthz}
    database: maker
    contract: architecture.contracts.maker
    publishes: [ThingMade, ThingGone]
  taker:
    db: taker
    calls: [maker]
    consumes: [thing.made]
    queue: taker.q
"""


def test_a_services_file_in_another_layout_is_read_as_it_is(tmp_path):
    system = load_system(system_at(tmp_path, FOREIGN))
    maker, taker = system.service("maker"), system.service("taker")
    assert system.name == "factory"
    assert system.exchange == "factory.events"
    assert (maker.port, maker.health_path, maker.database) == (8080, "/healthz", "maker")
    assert taker.port == 9000  # from the Dockerfile's EXPOSE
    assert taker.health_path == "/health"
    assert (taker.database, taker.calls, taker.queue) == ("taker", ("maker",), "taker.q")
    assert maker.events_published == ("ThingMade", "ThingGone")
    assert taker.events_consumed == ("ThingMade",)  # named by its routing key in services.yml
    assert system.routing_keys == {"ThingMade": "thing.made"}
    assert system.event_classes["ThingMade"] == "architecture.contracts.maker:ThingMade"
    assert system.warnings == ()


def test_keys_the_toolkit_does_not_read_are_left_alone_but_near_misses_warn(tmp_path):
    text = FOREIGN.replace("    db: taker\n", "    db: taker\n    prot: 9001\n")
    system = load_system(system_at(tmp_path, text))
    assert len(system.warnings) == 1
    notice = system.warnings[0]
    assert (notice.field, notice.line) == ("services.taker.prot", 15)
    assert "'port'" in notice.problem and "(line 15)" in str(notice)
    assert system.service("taker").port == 9000


def test_strict_makes_a_near_miss_an_error(tmp_path):
    text = FOREIGN.replace("    db: taker\n", "    db: taker\n    prot: 9001\n")
    root = system_at(tmp_path, text, "[tool.integration]\nstrict = true\n")
    with pytest.raises(ConfigError, match=r"services\.taker\.prot.*looks like 'port'"):
        load_system(root)


def test_the_config_says_what_services_yml_does_not(tmp_path):
    pyproject = """\
    [tool.integration]
    tests = "tests/cases"

    [tool.integration.database]
    user = "factory"
    password = "p@ss word"

    [tool.integration.wiring]
    conventional = false

    [tool.integration.services.taker]
    port = 7000
    health = "/ready"

    [tool.integration.services.taker.wiring]
    database_url = "TAKER_DSN"
    database_url_format = "postgresql://{db_user}:{db_password}@{db_host}:{db_port}/{db_name}"
    broker_url = "AMQP"
    service_url = "{SERVICE}_BASE"
    environment = { DBHOST = "{db_host}", MAKER = "{url:maker}", Q = "{queue}" }

    [tool.integration.events]
    outbox_table = "outbox"
    outbox_columns = { event_type = "kind" }
    routing_keys = { ThingGone = "thing.gone" }
    """
    system = load_system(system_at(tmp_path, FOREIGN, pyproject))
    taker = system.service("taker")
    assert (taker.port, taker.health_path) == (7000, "/ready")
    assert system.routing_keys == {"ThingMade": "thing.made", "ThingGone": "thing.gone"}
    assert system.events.outbox_table == "outbox" and system.events.outbox.event_type == "kind"
    assert system.events.outbox.event_id == "event_id"
    env = service_environment(system, taker)
    assert env == {
        "TAKER_DSN": "postgresql://factory:p@ss word@taker-db:5432/taker",
        "AMQP": "amqp://guest:guest@broker:5672/%2F",
        "MAKER_BASE": "http://maker:8080",
        "DBHOST": "taker-db",
        "MAKER": "http://maker:8080",
        "Q": "taker.q",
    }
    # A worker's copy reaches its worker's copy of the service it calls, its database and vhost.
    copy = service_environment(system, taker, "gw1")
    assert copy["MAKER_BASE"] == "http://maker-gw1:8080"
    assert copy["TAKER_DSN"].endswith("/taker_gw1")
    assert copy["AMQP"].endswith("/gw1")
    compose = render_compose(system, plan(system), workers=("gw0", "gw1"))
    assert compose["services"]["taker"]["depends_on"]["maker"] == {"condition": "service_started"}
    assert compose["services"]["taker-gw1"]["depends_on"]["maker-gw1"] == {"condition": "service_started"}
    assert compose["services"]["taker-db"]["environment"]["POSTGRES_USER"] == "factory"
    # `$` would be read by compose: doubled, so the container gets the password as written.
    assert compose["services"]["taker-db"]["environment"]["POSTGRES_PASSWORD"] == "p@ss word"


@pytest.mark.parametrize(
    ("pyproject", "key", "fragment"),
    [
        ("[tool.integration]\nstrikt = true\n", "tool.integration.strikt", "did you mean 'strict'"),
        ("[tool.integration]\nstrict = 'yes'\n", "tool.integration.strict", "true or false"),
        ("[tool.integration]\nhealth_timeout = 0.5\n", "health_timeout", "out of range"),
        ("[tool.integration]\nhealth_timeout = -1\n", "health_timeout", "out of range"),
        ("[tool.integration]\nmode_option = 'real'\n", "tool.integration.mode_option", "long option"),
        ("[tool.integration]\nreal_harness = 'x.y'\n", "tool.integration.real_harness", "module:Class"),
        ("[tool.integration.wiring]\nbroker_url = 'A-B'\n", "tool.integration.wiring.broker_url", "variable"),
        (
            "[tool.integration.wiring.environment]\nX = '{nope}'\n",
            "tool.integration.wiring.environment.X",
            "unknown placeholder {nope}",
        ),
        (
            "[tool.integration.events]\noutbox_columns = { evnt_id = 'id' }\n",
            "tool.integration.events.outbox_columns.evnt_id",
            "did you mean 'event_id'",
        ),
        (
            "[tool.integration.services.nosuch]\nport = 1\n",
            "tool.integration.services.nosuch",
            "does not have",
        ),
        ("[tool.integration.services.taker]\nport = 0\n", "tool.integration.services.taker.port", "1..65535"),
        ("[tool.integration\n", None, "not valid TOML"),
    ],
)
def test_a_malformed_config_names_the_file_the_key_and_its_line(tmp_path, pyproject, key, fragment):
    root = system_at(tmp_path, FOREIGN, pyproject)
    with pytest.raises(ConfigError) as caught:
        load_system(root)
    message = str(caught.value)
    assert "pyproject.toml" in message
    assert fragment in message
    if key is not None:
        assert key in message
    assert caught.value.line is not None or "line" in message


def test_an_integration_toml_of_its_own_wins(tmp_path):
    root = system_at(
        tmp_path, FOREIGN, "[tool.integration]\ntests = 'a'\n", **{"integration.toml": "tests = 'b'\n"}
    )
    assert load_config(root).tests == "b"
    assert load_config(root).path == root / "integration.toml"


def test_calls_in_a_circle_are_refused(tmp_path):
    text = FOREIGN.replace("    database: maker\n", "    database: maker\n    calls: [taker]\n")
    with pytest.raises(ConfigError, match=r"circle \((maker -> taker -> maker|taker -> maker -> taker)\)"):
        load_system(system_at(tmp_path, text))


def test_a_call_to_an_unknown_service_is_refused(tmp_path):
    text = FOREIGN.replace("calls: [maker]", "calls: [nobody]")
    with pytest.raises(ConfigError, match=r"services\.taker\.calls.*'nobody'"):
        load_system(system_at(tmp_path, text))


def test_templates_are_checked():
    assert check_template("{db_host}:{db_port}") is None
    assert check_template("{url:maker}") is None
    assert "unknown placeholder {url:}" in (check_template("{url:}") or "")
    assert check_template("{SERVICE}_URL", pattern=True) is None
    assert "unknown placeholder {db_host}" in (check_template("{db_host}", pattern=True) or "")


def test_the_bundled_examples_need_only_their_config(tmp_path):
    shop = load_system(SHOP)
    assert [s.name for s in shop.services] == ["orders", "inventory"]
    assert shop.service("inventory").port == 8081  # EXPOSE: services.yml names no port
    assert shop.service("orders").calls == ("inventory",)
    assert shop.routing_keys == {"OrderPlaced": "order.placed", "OrderCancelled": "order.cancelled"}
    assert shop.warnings == ()
    env = service_environment(shop, shop.service("inventory"))
    assert env["DB_HOST"] == "inventory-db" and env["AMQP_URL"].startswith("amqp://")
    assert "DATABASE_URL" not in env and "PORT" not in env
    assert load_system(SHORTENER).warnings == ()


# --- mutations: no input ends in anything but a result or a ConfigError -----------------------------


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    choice = rng.randrange(6)
    if choice == 0 and lines:  # drop a line
        del lines[rng.randrange(len(lines))]
    elif choice == 1 and lines:  # duplicate a line
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif choice == 2 and lines:  # swap two lines
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        position = rng.randrange(len(text) + 1)
        alphabet = "{}[]:=,'\"#&*!|>-\n\t .\\0aZ9\u00e9"
        if choice == 3:
            return text[:position] + rng.choice(alphabet) + text[position:]
        if choice == 4:
            return text[:position] + text[position + rng.randrange(1, 4) :]
        return text[:position] + rng.choice(["&a", "*a", "!!binary", "<<: *a", "{{", "}}"]) + text[position:]
    return "".join(lines)


MUTATION_CASES = 1200


@pytest.mark.parametrize("target", ["architecture/services.yml", "pyproject.toml"])
def test_mutated_inputs_end_in_a_result_or_a_config_error(tmp_path, target):
    root = tmp_path / "shop"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns("__pycache__", ".integration"))
    original = (root / target).read_text()
    rng = random.Random(f"adoption-{target}")
    errors = 0
    for _ in range(MUTATION_CASES):
        text = original
        for _ in range(rng.randrange(1, 4)):
            text = _mutate(text, rng)
        (root / target).write_text(text)
        try:
            load_system(root)
        except ConfigError as exc:
            errors += 1
            assert str(exc).startswith(str(root / target)) or str(root) in str(exc), str(exc)
    assert 0 < errors < MUTATION_CASES  # the loop made both kinds of input


def test_services_start_in_the_order_their_calls_allow(tmp_path):
    system = load_system(system_at(tmp_path, FOREIGN))
    assert system.call_levels() == [("maker",), ("taker",)]
    assert load_system(SHOP).call_levels() == [("inventory",), ("orders",)]
    assert load_system(SHORTENER).call_levels() == [("links", "analytics")]


# --- hostile inputs ------------------------------------------------------------------------------------


def test_a_contract_that_loops_at_import_is_one_message_not_a_hang(tmp_path, monkeypatch):
    import integration.discovery as discovery

    monkeypatch.setattr(discovery, "CONTRACT_IMPORT_SECONDS", 0.5)
    loop = "import time\nwhile True:\n    time.sleep(0.01)\n"
    root = system_at(tmp_path, FOREIGN, **{"architecture/contracts/maker.py": loop})
    with pytest.raises(ConfigError) as caught:
        load_system(root)
    assert "did not finish within 0.5 s" in str(caught.value)
    assert "maker.py:3" in str(caught.value) or "maker.py:2" in str(caught.value)
    assert caught.value.fix and "into a function" in caught.value.fix


def test_a_contract_that_exits_at_import_is_one_message(tmp_path):
    root = system_at(tmp_path, FOREIGN, **{"architecture/contracts/maker.py": "raise SystemExit(3)\n"})
    with pytest.raises(ConfigError, match="SystemExit"):
        load_system(root)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("services: &a\n  x: *a\n", "services"),  # an alias that refers to itself
        ("a: &a [*a]\nservices: {}\n", "YAML"),
        ("services:\n" + "  " * 3000 + "x: 1\n", "YAML"),
        ("\ufeffservices: [\n", "YAML"),
    ],
    ids=["recursive-alias", "recursive-list", "deep", "bom-unclosed"],
)
def test_hostile_yaml_is_one_config_error(tmp_path, text, fragment):
    root = system_at(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_system(root)
    assert str(root / "architecture" / "services.yml") in str(caught.value)


def test_a_services_file_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    import os

    root = system_at(tmp_path, FOREIGN)
    services = root / "architecture" / "services.yml"
    services.unlink()
    os.mkfifo(services)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_system(root)


def test_a_services_file_elsewhere_still_finds_the_contracts_under_the_root(tmp_path):
    text = FOREIGN.replace("    contract: architecture.contracts.maker\n", "")
    root = system_at(tmp_path, "", '[tool.integration]\nservices_file = "deploy/catalogue/services.yml"\n')
    (root / "architecture" / "services.yml").unlink()
    write(root, {"deploy/catalogue/services.yml": text})
    system = load_system(root)
    assert system.service("maker").contract_module == "architecture.contracts.maker"
    assert system.routing_keys == {"ThingMade": "thing.made"}
