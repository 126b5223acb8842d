"""Discovery: services.yml + contract modules → SystemSpec, and the malformed-input corpus."""

from __future__ import annotations

import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from integration.discovery import find_system_root, load_system
from integration.errors import ConfigError
from integration.model import BaseImages, checkout_id

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "systems" / "minimal"

DOCKERFILE = "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n"

EVENTS_MODULE = """\
from pydantic import BaseModel


class LinkVisited(BaseModel):
    code: str


class LinkDeleted(BaseModel):
    code: str
"""

LINKS_CONTRACT = """\
from architecture.contracts.events import LinkVisited

EVENTS_PUBLISHED = [LinkVisited]
"""

STATS_CONTRACT = """\
from architecture.contracts.events import LinkVisited

EVENTS_CONSUMED = [LinkVisited]
"""

BASE_FILES: dict[str, str] = {
    "architecture/__init__.py": "",
    "architecture/contracts/__init__.py": "",
    "architecture/contracts/events.py": EVENTS_MODULE,
    "architecture/contracts/links.py": LINKS_CONTRACT,
    "architecture/contracts/stats.py": STATS_CONTRACT,
    "services/links/Dockerfile": DOCKERFILE,
    "services/stats/Dockerfile": DOCKERFILE,
}

SERVICES_YML = "architecture/services.yml"
TOP = "version: 1\nsystem: shortener"
LINKS = "port: 8000\ndatabase: links"
STATS = "port: 8001\ndatabase: stats"


def services_yml(
    top: str = TOP, links: str | None = LINKS, stats: str | None = STATS, extra: str = ""
) -> str:
    """A services.yml with the `links` and `stats` services, each body given as unindented YAML."""
    text = top + "\nservices:\n"
    for name, body in (("links", links), ("stats", stats)):
        if body is not None:
            text += f"  {name}:\n" + textwrap.indent(body, "    ") + "\n"
    return text + extra


@dataclass(frozen=True)
class Symlink:
    target: str


def write_tree(root: Path, files: dict[str, str | bytes | Symlink | None]) -> None:
    for relative, content in files.items():
        path = root / relative
        if content is None:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            path.unlink(missing_ok=True)
            path.symlink_to(content.target)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def make_system(root: Path, yml: str | bytes, files: dict | None = None) -> Path:
    write_tree(root, {**BASE_FILES, SERVICES_YML: yml})
    write_tree(root, files or {})
    return root


# --- loading a valid system ---------------------------------------------------------------------------


def test_loads_the_fixture_system():
    system = load_system(FIXTURE)

    assert system.name == "minimal"
    assert system.root == FIXTURE
    assert system.services_file == FIXTURE / "architecture" / "services.yml"
    assert system.exchange == "events"
    assert system.base_images == BaseImages()
    assert [s.name for s in system.services] == ["orders", "billing"]
    orders, billing = system.services
    assert orders.port == 8000
    assert orders.database == "orders"
    assert orders.health_path == "/health"
    assert orders.image == f"minimal-orders:{checkout_id(FIXTURE)}"  # this checkout's own
    assert orders.contract_module == "architecture.contracts.orders"
    assert orders.build_dir == FIXTURE / "services" / "orders"
    assert orders.dockerfile == FIXTURE / "services" / "orders" / "Dockerfile"
    assert orders.events_published == ("OrderPlaced",)
    assert orders.events_consumed == ()
    assert billing.events_consumed == ("OrderPlaced",)
    assert billing.health_path == "/healthz"
    assert billing.environment == {"LOG_LEVEL": "debug", "GREETING": "price in $USD"}
    assert system.needs_broker


def test_paths_are_absolute_even_for_a_relative_root(tmp_path, monkeypatch):
    make_system(tmp_path / "repo", services_yml())
    monkeypatch.chdir(tmp_path)

    system = load_system(Path("repo"))

    assert system.root.is_absolute()
    assert system.root == (tmp_path / "repo").resolve()
    assert system.services_file is not None and system.services_file.is_absolute()
    for spec in system.services:
        assert spec.build_dir.is_absolute()
        assert spec.dockerfile.is_absolute()


def test_explicit_settings_are_honoured(tmp_path):
    yml = services_yml(
        top="version: 1\nsystem: shortener\nexchange: domain.events",
        links=(
            "build: src/links\ndockerfile: docker/links.Dockerfile\nport: 9000\nhealth: /ready?deep=1\n"
            "contract: shared.links_api\nimage: registry.local:5000/team/links:dev\n"
            "environment:\n  FEATURE: 'on'\n  EMPTY: ''"
        ),
    )
    root = make_system(
        tmp_path,
        yml,
        {
            "src/links/app.py": "",
            "docker/links.Dockerfile": DOCKERFILE,
            "architecture/contracts/shared/__init__.py": "",
            "architecture/contracts/shared/links_api.py": LINKS_CONTRACT,
        },
    )

    system = load_system(root, BaseImages(postgres="pg:local"))

    links = system.service("links")
    assert system.exchange == "domain.events"
    assert system.base_images.postgres == "pg:local"
    assert links.build_dir == root.resolve() / "src" / "links"
    assert links.dockerfile == root.resolve() / "docker" / "links.Dockerfile"
    assert links.port == 9000
    assert links.health_path == "/ready?deep=1"
    assert links.database is None
    assert links.contract_module == "architecture.contracts.shared.links_api"
    assert links.image == "registry.local:5000/team/links:dev"
    assert links.environment == {"FEATURE": "on", "EMPTY": ""}
    assert links.events_published == ("LinkVisited",)


def test_dashed_service_name_defaults_to_underscored_contract(tmp_path):
    yml = services_yml(stats=None, extra="  link-stats:\n    port: 8002\n")
    root = make_system(
        tmp_path,
        yml,
        {
            "architecture/contracts/link_stats.py": STATS_CONTRACT,
            "services/link-stats/Dockerfile": DOCKERFILE,
        },
    )

    spec = load_system(root).service("link-stats")

    assert spec.contract_module == "architecture.contracts.link_stats"
    assert spec.events_consumed == ("LinkVisited",)
    assert spec.image == f"shortener-link-stats:{checkout_id(root)}"


def test_missing_event_lists_are_empty_and_no_broker_is_needed(tmp_path):
    root = make_system(
        tmp_path,
        services_yml(),
        {"architecture/contracts/links.py": "", "architecture/contracts/stats.py": "X = 1\n"},
    )

    system = load_system(root)

    assert all(s.events_published == () and s.events_consumed == () for s in system.services)
    assert not system.needs_broker


def test_event_tuples_are_accepted_and_duplicates_collapse(tmp_path):
    contract = "from architecture.contracts.events import LinkVisited, LinkDeleted\n"
    contract += "EVENTS_PUBLISHED = (LinkVisited, LinkDeleted, LinkVisited)\n"
    root = make_system(tmp_path, services_yml(), {"architecture/contracts/links.py": contract})

    assert load_system(root).service("links").events_published == ("LinkVisited", "LinkDeleted")


def test_publisher_without_consumer_is_fine_and_needs_no_broker(tmp_path):
    root = make_system(tmp_path, services_yml(), {"architecture/contracts/stats.py": ""})

    system = load_system(root)

    assert system.service("links").events_published == ("LinkVisited",)
    assert not system.needs_broker


def test_two_roots_do_not_leak_into_each_other(tmp_path):
    first = make_system(tmp_path / "a", services_yml())
    other_links = "from architecture.contracts.events import LinkDeleted\nEVENTS_PUBLISHED = [LinkDeleted]\n"
    second = make_system(
        tmp_path / "b",
        services_yml(),
        {"architecture/contracts/links.py": other_links, "architecture/contracts/stats.py": ""},
    )

    a = load_system(first)
    b = load_system(second)
    a_again = load_system(first)

    assert a.service("links").events_published == ("LinkVisited",)
    assert b.service("links").events_published == ("LinkDeleted",)
    assert b.service("stats").events_consumed == ()
    assert a_again == a


def test_interpreter_state_is_restored(tmp_path, monkeypatch):
    root = make_system(tmp_path, services_yml())
    for name in [n for n in sys.modules if n == "architecture" or n.startswith("architecture.")]:
        monkeypatch.delitem(sys.modules, name)
    callers_own = types.ModuleType("architecture")
    callers_contracts = types.ModuleType("architecture.contracts")
    monkeypatch.setitem(sys.modules, "architecture", callers_own)
    monkeypatch.setitem(sys.modules, "architecture.contracts", callers_contracts)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path_before = list(sys.path)

    load_system(root)

    assert sys.path == path_before
    assert sys.dont_write_bytecode is False
    assert sys.modules["architecture"] is callers_own
    assert sys.modules["architecture.contracts"] is callers_contracts
    assert sorted(n for n in sys.modules if n.startswith("architecture")) == [
        "architecture",
        "architecture.contracts",
    ]
    assert not list(root.rglob("__pycache__"))


def test_line_numbers_point_at_the_field(tmp_path):
    root = make_system(tmp_path, services_yml(links="port: 99999"))

    with pytest.raises(ConfigError) as caught:
        load_system(root)

    assert "(line 5)" in str(caught.value)


def test_missing_services_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_system(tmp_path)

    assert caught.value.path == str(tmp_path.resolve() / "architecture" / "services.yml")
    assert "not found" in str(caught.value)
    assert caught.value.exit_status == 2


def test_find_system_root_walks_up(tmp_path):
    root = make_system(tmp_path / "repo", services_yml())
    nested = root / "use_case_tests" / "deep"
    nested.mkdir(parents=True)

    assert find_system_root(nested) == root.resolve()
    assert find_system_root(root) == root.resolve()
    assert find_system_root(FIXTURE / "services" / "orders") == FIXTURE


def test_find_system_root_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError) as caught:
        find_system_root(tmp_path)

    assert "architecture/services.yml" in str(caught.value)
    assert str(tmp_path.resolve()) in str(caught.value)
    assert caught.value.exit_status == 2


# --- the malformed-input corpus ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    yml: str | bytes
    field: str | None  # the exact ConfigError.field
    needles: tuple[str, ...] = ()  # more text the message must hold; {root} is the system root
    files: dict = field(default_factory=dict)
    file: str = SERVICES_YML  # the file the error must name, relative to the root


RAISES = "raise RuntimeError('boom')\n"

CASES = [
    # YAML itself
    Case(
        "yaml-syntax",
        services_yml(links="port: 8000\n database: links"),
        None,
        ("not valid YAML", "line 6"),
    ),
    Case("yaml-unclosed-flow", "version: 1\nsystem: [shortener\nservices: {}\n", None, ("line 3",)),
    Case("yaml-python-tag", "version: !!python/object:os.system x\n", None, ("not valid YAML", "line 1")),
    Case("not-utf8", b"version: 1\nsystem: \xff\xfe\n", None, ("UTF-8",)),
    Case("empty-file", "", None, ("empty",)),
    Case("not-a-mapping", "- links\n- stats\n", None, ("must be a mapping", "a list")),
    Case(
        "duplicate-key",
        services_yml(extra="  links:\n    port: 8002\n"),
        "services.links",
        ("appears twice", "line 10"),
    ),
    # top level
    Case("system-bad-name", services_yml(top="version: 1\nsystem: Short_ener"), "system", ("lower-case",)),
    Case("system-not-string", services_yml(top="version: 1\nsystem: 12"), "system", ("must be a string",)),
    Case(
        "exchange-reserved",
        services_yml(top="version: 1\nsystem: shortener\nexchange: amq.topic"),
        "exchange",
        ("amq.",),
    ),
    Case("services-missing", TOP + "\n", "services", ("required",)),
    Case("services-empty", TOP + "\nservices: {}\n", "services", ("at least one",)),
    Case("services-list", TOP + "\nservices:\n  - links\n", "services", ("a list",)),
    # service names
    Case(
        "service-bad-name",
        TOP + "\nservices:\n  Links_1:\n    port: 1\n",
        "services.Links_1",
        ("lower-case",),
    ),
    Case("service-name-int", TOP + "\nservices:\n  123:\n    port: 1\n", "services.123", ("string",)),
    Case(
        "service-not-mapping",
        services_yml(links=None, extra="  links: 8000\n"),
        "services.links",
        ("mapping",),
    ),
    Case(
        "service-named-broker",
        services_yml(extra="  broker:\n    port: 8002\n"),
        "services.broker",
        ("message broker",),
        {"services/broker/Dockerfile": DOCKERFILE, "architecture/contracts/broker.py": ""},
    ),
    Case(
        "service-clashes-with-db",
        services_yml(extra="  links-db:\n    port: 8002\n"),
        "services.links-db",
        ("database container of 'links'",),
        {"services/links-db/Dockerfile": DOCKERFILE, "architecture/contracts/links_db.py": ""},
    ),
    # keys and types
    Case("null-value", services_yml(links="port: 8000\nhealth:"), "services.links.health", ("null",)),
    # port
    Case(
        "port-missing",
        services_yml(links="database: links"),
        "services.links",
        ("no container port", "EXPOSE"),
    ),
    Case("port-too-big", services_yml(links="port: 70000"), "services.links.port", ("1..65535",)),
    Case("port-zero", services_yml(links="port: 0"), "services.links.port", ("1..65535",)),
    Case("port-string", services_yml(links="port: 'eighty'"), "services.links.port", ("integer",)),
    Case("port-bool", services_yml(links="port: true"), "services.links.port", ("boolean",)),
    # health, database
    Case("health-no-slash", services_yml(links="port: 1\nhealth: health"), "services.links.health", ("'/'",)),
    Case(
        "database-bad-name",
        services_yml(links="port: 1\ndatabase: my-db"),
        "services.links.database",
        ("'my-db'",),
    ),
    Case(
        "database-shared",
        services_yml(stats="port: 8001\ndatabase: links"),
        "services.stats.database",
        ("also used by service 'links'",),
    ),
    # build folder and Dockerfile
    Case(
        "build-missing",
        services_yml(links="port: 1\nbuild: services/nope"),
        "services.links.build",
        ("{root}/services/nope", "does not exist"),
    ),
    Case(
        "build-default-missing",
        services_yml(),
        "services.links.build",
        ("{root}/services/links",),
        {"services/links/Dockerfile": None, "services/links": None},
    ),
    Case(
        "build-is-a-file",
        services_yml(links="port: 1\nbuild: services/links/Dockerfile"),
        "services.links.build",
        ("not a folder",),
    ),
    Case(
        "build-outside-root",
        services_yml(links="port: 1\nbuild: ../elsewhere"),
        "services.links.build",
        ("not under the system root",),
    ),
    Case(
        "dockerfile-missing",
        services_yml(),
        "services.links.dockerfile",
        ("{root}/services/links/Dockerfile", "does not exist"),
        {"services/links/Dockerfile": None, "services/links/app.py": ""},
    ),
    Case(
        "dockerfile-explicit-missing",
        services_yml(links="port: 1\ndockerfile: docker/links.Dockerfile"),
        "services.links.dockerfile",
        ("{root}/docker/links.Dockerfile",),
    ),
    Case(
        "dockerfile-outside-root",
        services_yml(links="port: 1\ndockerfile: ../Dockerfile"),
        "services.links.dockerfile",
        ("not under the system root",),
        {"../Dockerfile": DOCKERFILE},
    ),
    Case(
        "dockerfile-symlink-outside-root",
        services_yml(),
        "services.links.dockerfile",
        ("not under the system root",),
        {"../Dockerfile": DOCKERFILE, "services/links/Dockerfile": Symlink("../../../Dockerfile")},
    ),
    Case(
        "dockerfile-absolute",
        services_yml(links="port: 1\ndockerfile: /etc/hostname"),
        "services.links.dockerfile",
        ("absolute",),
    ),
    Case(
        "dockerfile-is-a-folder",
        services_yml(links="port: 1\ndockerfile: services/links"),
        "services.links.dockerfile",
        ("not a file",),
    ),
    # images
    Case("image-bad", services_yml(links="port: 1\nimage: Links:Test"), "services.links.image", ("tag",)),
    Case(
        "image-duplicate",
        services_yml(links="port: 8000\nimage: links:test", stats="port: 8001\nimage: links:test"),
        "services.stats.image",
        ("also the image of service 'links'",),
    ),
    Case(
        "image-is-base-image",
        services_yml(links="port: 1\nimage: postgres:15"),
        "services.links.image",
        ("PostgreSQL base image",),
    ),
    # environment
    Case(
        "environment-list",
        services_yml(links="port: 1\nenvironment:\n  - A=1"),
        "services.links.environment",
        ("mapping",),
    ),
    Case(
        "environment-bool-value",
        services_yml(links="port: 1\nenvironment:\n  LEVEL: true"),
        "services.links.environment.LEVEL",
        ("quote it",),
    ),
    Case(
        "environment-bad-name",
        services_yml(links="port: 1\nenvironment:\n  1X: a"),
        "services.links.environment.1X",
        ("environment variable name",),
    ),
    # contracts
    Case(
        "contract-bad-name",
        services_yml(links="port: 1\ncontract: links.py"),
        "services.links.contract",
        ("not a module name",),
    ),
    Case(
        "contract-missing",
        services_yml(links="port: 1\ncontract: nope"),
        "services.links.contract",
        ("{root}/architecture/contracts/nope.py",),
    ),
    Case(
        "contract-syntax-error",
        services_yml(),
        "architecture.contracts.links",
        ("SyntaxError", "links.py:2"),
        {"architecture/contracts/links.py": "X = 1\ndef broken(:\n"},
        "architecture/contracts/links.py",
    ),
    Case(
        "contract-import-error",
        services_yml(),
        "architecture.contracts.links",
        ("ModuleNotFoundError", "no_such_module_xyz", "links.py:1"),
        {"architecture/contracts/links.py": "import no_such_module_xyz\n"},
        "architecture/contracts/links.py",
    ),
    Case(
        "contract-raises",
        services_yml(),
        "architecture.contracts.stats",
        ("RuntimeError", "boom", "stats.py:2"),
        {"architecture/contracts/stats.py": "X = 1\n" + RAISES},
        "architecture/contracts/stats.py",
    ),
    Case(
        "contract-exits",
        services_yml(),
        "architecture.contracts.links",
        ("SystemExit",),
        {"architecture/contracts/links.py": "import sys\nsys.exit(3)\n"},
        "architecture/contracts/links.py",
    ),
    Case(
        "architecture-package-raises",
        services_yml(),
        "architecture.contracts.links",
        ("RuntimeError", "architecture/__init__.py:1"),
        {"architecture/__init__.py": RAISES},
        "architecture/contracts/links.py",
    ),
    # event lists
    Case(
        "events-not-a-list",
        services_yml(),
        "architecture.contracts.links.EVENTS_PUBLISHED",
        ("must be a list", "ModelMetaclass"),
        {"architecture/contracts/links.py": LINKS_CONTRACT.replace("[LinkVisited]", "LinkVisited")},
        "architecture/contracts/links.py",
    ),
    Case(
        "events-none",
        services_yml(),
        "architecture.contracts.links.EVENTS_PUBLISHED",
        ("None",),
        {"architecture/contracts/links.py": "EVENTS_PUBLISHED = None\n"},
        "architecture/contracts/links.py",
    ),
    Case(
        "events-item-is-a-name",
        services_yml(),
        "architecture.contracts.stats.EVENTS_CONSUMED[0]",
        ("'LinkVisited'", "not a pydantic model class"),
        {"architecture/contracts/stats.py": "EVENTS_CONSUMED = ['LinkVisited']\n"},
        "architecture/contracts/stats.py",
    ),
    Case(
        "events-item-is-a-plain-class",
        services_yml(),
        "architecture.contracts.links.EVENTS_PUBLISHED[1]",
        ("Plain",),
        {
            "architecture/contracts/links.py": "class Plain:\n    pass\n\n\n"
            + LINKS_CONTRACT.replace("[LinkVisited]", "[LinkVisited, Plain]")
        },
        "architecture/contracts/links.py",
    ),
    Case(
        "events-item-is-an-instance",
        services_yml(),
        "architecture.contracts.links.EVENTS_PUBLISHED[0]",
        ("not a pydantic model class",),
        {
            "architecture/contracts/links.py": LINKS_CONTRACT.replace(
                "[LinkVisited]", "[LinkVisited(code='x')]"
            )
        },
        "architecture/contracts/links.py",
    ),
    Case(
        "consumed-but-not-published",
        services_yml(),
        "architecture.contracts.stats.EVENTS_CONSUMED",
        ("'LinkDeleted'", "service 'stats'", "LinkVisited (links)"),
        {"architecture/contracts/stats.py": STATS_CONTRACT.replace("LinkVisited", "LinkDeleted")},
        "architecture/contracts/stats.py",
    ),
    Case(
        "consumed-and-nothing-published",
        services_yml(),
        "architecture.contracts.stats.EVENTS_CONSUMED",
        ("'LinkVisited'", "published events: none"),
        {"architecture/contracts/links.py": ""},
        "architecture/contracts/stats.py",
    ),
]


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 20
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_input_is_a_config_error(tmp_path, case):
    root = make_system(tmp_path / "repo", case.yml, case.files).resolve()

    with pytest.raises(ConfigError) as caught:
        load_system(root)

    error = caught.value
    message = str(error)
    expected_file = (root / case.file).resolve()
    assert error.exit_status == 2
    assert error.path == str(expected_file)
    assert message.startswith(str(expected_file))
    assert error.field == case.field
    if case.field is not None:
        assert f": {case.field}: " in message
    for needle in case.needles:
        assert needle.format(root=root) in message
    assert "Traceback" not in message
