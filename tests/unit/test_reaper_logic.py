"""The reaper without an engine: when it decides to remove a project, what it removes (a fake engine),
which reapers it retires, and the run's end of the protocol against the real program on a local socket."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from integration import reaper as host
from integration.model import LABEL_SERVICE, LABEL_SYSTEM

PROGRAM = Path(host.__file__).parent / "standins" / "reaper" / "reaper.py"


def _load_program() -> ModuleType:
    # No __pycache__ in the recipe folder: the folder ships as package data.
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec = importlib.util.spec_from_file_location("reaper_program", PROGRAM)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


program = _load_program()


# -- Watch: when to reap ----------------------------------------------------------------------------------


def watch(now: float = 0.0) -> object:
    return program.Watch(now, heartbeat_timeout=10, grace=5, connect_timeout=10)


def test_nothing_happens_while_the_run_is_connected_and_beating() -> None:
    w = watch()
    w.connected("a", 1)
    for t in range(2, 100):
        w.heard("a", t)
        assert w.silent(t) == []
        assert w.verdict(t) is None


def test_a_run_that_never_connects_is_reaped_after_the_connect_timeout() -> None:
    w = watch()
    assert w.verdict(9.9) is None
    assert "no run connected" in w.verdict(10)


def test_a_dropped_connection_is_reaped_after_the_grace() -> None:
    w = watch()
    w.connected("a", 1)
    w.disconnected("a", 3)
    assert w.verdict(7.9) is None
    assert "dropped" in w.verdict(8)


def test_a_reconnect_within_the_grace_cancels() -> None:
    w = watch()
    w.connected("a", 1)
    w.disconnected("a", 3)
    w.connected("b", 6)
    assert w.verdict(8) is None
    w.heard("b", 15)
    assert w.verdict(15) is None


def test_one_of_two_connections_dropping_is_no_verdict() -> None:
    w = watch()
    w.connected("a", 1)
    w.connected("b", 2)
    w.disconnected("a", 3)
    assert w.verdict(30) is None


def test_a_silent_connection_is_reported_then_grace_applies() -> None:
    w = watch()
    w.connected("a", 1)
    w.heard("a", 2)
    assert w.silent(11.9) == []
    assert w.silent(12) == ["a"]
    w.disconnected("a", 12)
    assert w.verdict(16.9) is None
    assert w.verdict(17) is not None


def test_lines_from_an_unknown_connection_do_not_count() -> None:
    w = watch()
    w.heard("stranger", 1)
    assert not w.ever_connected
    w.disconnected("stranger", 2)
    assert "no run connected" in w.verdict(10)


# -- reap: exactly the project, until nothing is left ---------------------------------------------------


class FakeEngine:
    """Objects by kind; the label filter is a prefix match on purpose, so that the program's own exact
    check is what keeps `shop-1` from being removed with `shop`."""

    def __init__(
        self, objects: dict[str, list[dict]], appear: dict[int, list[tuple[str, dict]]] | None = None
    ):
        self.objects = objects
        self.appear = appear or {}  # list call number -> objects created meanwhile (a compose up going on)
        self.calls = 0
        self.removed: list[tuple[str, str]] = []

    def _list(self, kind: str, label: str, value: str) -> list[dict]:
        self.calls += 1
        for later_kind, item in self.appear.pop(self.calls, []):
            self.objects[later_kind].append(item)
        return [o for o in self.objects[kind] if (o.get("Labels") or {}).get(label, "").startswith(value)]

    def containers(self, label: str, value: str) -> list[dict]:
        return self._list("container", label, value)

    def networks(self, label: str, value: str) -> list[dict]:
        return self._list("network", label, value)

    def volumes(self, label: str, value: str) -> list[dict]:
        return self._list("volume", label, value)

    def _remove(self, kind: str, key: str, item: dict) -> None:
        self.objects[kind] = [o for o in self.objects[kind] if o[key] != item[key]]
        self.removed.append((kind, item[key]))

    def remove_container(self, item: dict) -> None:
        self._remove("container", "Id", item)

    def remove_network(self, item: dict) -> None:
        self._remove("network", "Id", item)

    def remove_volume(self, item: dict) -> None:
        self._remove("volume", "Name", item)


def _of(project: str, key: str, value: str) -> dict:
    return {key: value, "Labels": {program.PROJECT_LABEL: project}}


def test_reap_removes_the_project_and_nothing_else() -> None:
    engine = FakeEngine(
        {
            "container": [_of("shop", "Id", "c1"), _of("shop", "Id", "c2"), _of("shop-1", "Id", "other")],
            "network": [_of("shop", "Id", "n1"), _of("shopping", "Id", "n2")],
            "volume": [_of("shop", "Name", "v1"), {"Name": "unlabelled", "Labels": None}],
        }
    )
    removed = program.reap(engine, "shop", sleep=lambda s: None)
    assert removed == 4
    assert sorted(engine.removed) == [
        ("container", "c1"),
        ("container", "c2"),
        ("network", "n1"),
        ("volume", "v1"),
    ]
    assert [o["Id"] for o in engine.objects["container"]] == ["other"]
    assert [o["Id"] for o in engine.objects["network"]] == ["n2"]


def test_reap_passes_again_until_two_passes_find_nothing() -> None:
    # A container that a still running `compose up` creates after the first pass is removed too.
    engine = FakeEngine(
        {"container": [_of("shop", "Id", "c1")], "network": [], "volume": []},
        appear={4: [("container", _of("shop", "Id", "late"))]},
    )
    assert program.reap(engine, "shop", sleep=lambda s: None) == 2
    assert ("container", "late") in engine.removed


def test_reap_gives_up_after_its_budget() -> None:
    class Stubborn(FakeEngine):
        def remove_container(self, item: dict) -> None:
            raise program.EngineError("no")

    engine = Stubborn({"container": [_of("shop", "Id", "c1")], "network": [], "volume": []})
    clock = iter(range(0, 1000))
    assert program.reap(engine, "shop", budget=5, clock=lambda: next(clock), sleep=lambda s: None) == 0


def test_reap_refuses_an_empty_project() -> None:
    with pytest.raises(ValueError):
        program.reap(FakeEngine({}), "")


def test_label_filter_is_the_exact_label() -> None:
    assert program.label_filter(program.PROJECT_LABEL, "shop") == (
        '{"label": ["com.docker.compose.project=shop"]}'
    )
    assert program.api_path("/containers/json", all="1") == "/containers/json?all=1"


def test_older_reapers_are_those_of_the_project_started_before() -> None:
    def reaper(name: str, project: str, started: int) -> dict:
        return {
            "Id": name,
            "Names": [f"/{name}"],
            "Labels": {program.GUARDS_LABEL: project, program.STARTED_LABEL: str(started)},
        }

    found = [
        reaper("me", "shop", 100),
        reaper("old", "shop", 50),
        reaper("newer", "shop", 150),
        reaper("other-project", "shop-1", 10),
        reaper("same-time-a", "shop", 100),
    ]
    older = program.older_reapers(found, "shop", "me", 100)
    assert [r["Id"] for r in older] == ["old"]  # a tie on the start time goes by name
    assert [r["Id"] for r in program.older_reapers(found, "shop", "same-time-a", 100)] == ["me", "old"]


# -- the host side's pure parts ---------------------------------------------------------------------------


def test_host_and_program_agree_on_labels_and_port() -> None:
    assert host.LABEL_GUARDS == program.GUARDS_LABEL
    assert host.LABEL_STARTED == program.STARTED_LABEL
    assert host.PROJECT_LABEL == program.PROJECT_LABEL
    assert host.CONTAINER_PORT == program.DEFAULT_PORT
    assert host.ENGINE_SOCKET == program.DEFAULT_SOCKET


def test_reaper_labels() -> None:
    labels = host.reaper_labels("shop-1a2b", {LABEL_SYSTEM: "shop"}, 42)
    assert labels == {
        LABEL_SERVICE: "reaper",
        LABEL_SYSTEM: "shop",
        host.LABEL_GUARDS: "shop-1a2b",
        host.LABEL_STARTED: "42",
    }
    with pytest.raises(ValueError, match="compose labels"):
        host.reaper_labels("shop", {"com.docker.compose.project": "shop"}, 1)


@pytest.mark.parametrize("name", ["", "Shop", "-shop", "shop project", "shop/1"])
def test_project_names_that_compose_would_not_take_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        host.check_project(name)


def test_engine_socket() -> None:
    assert host.engine_socket(environ={}) == "/var/run/docker.sock"
    assert host.engine_socket(environ={"DOCKER_HOST": "tcp://10.0.0.5:2375"}) == "/var/run/docker.sock"
    rootless = {"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}
    assert host.engine_socket(environ=rootless) == "/run/user/1000/docker.sock"
    desktop = {"DOCKER_HOST": "unix:///Users/me/.docker/run/docker.sock"}
    assert host.engine_socket(environ=desktop) == "/var/run/docker.sock"
    assert host.engine_socket(environ={**rootless, host.SOCKET_ENV: "/srv/docker.sock"}) == "/srv/docker.sock"


def test_recipe_hash_covers_the_program_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "reaper"
    recipe.mkdir()
    for name in host.RECIPE_FILES:
        (recipe / name).write_bytes((host.RECIPE / name).read_bytes())
    monkeypatch.setattr(host, "RECIPE", recipe)
    original = host.recipe_hash()
    (recipe / "__pycache__").mkdir()
    (recipe / "__pycache__" / "reaper.cpython-311.pyc").write_bytes(b"junk")
    assert host.recipe_hash() == original
    (recipe / "reaper.py").write_text((recipe / "reaper.py").read_text() + "\n# changed\n")
    assert host.recipe_hash() != original


def test_reaper_enabled() -> None:
    assert host.reaper_enabled({})
    assert host.reaper_enabled({host.ENABLED_ENV: "1"})
    assert not host.reaper_enabled({host.ENABLED_ENV: "0"})
    assert not host.reaper_enabled({host.ENABLED_ENV: "off"})


# -- the protocol: the host's Reaper against the real program, on a local socket, with a fake engine ------


class Served:
    def __init__(self, project: str, engine: FakeEngine, **timeouts: float) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.result: str | None = None
        self.engine = engine
        engine.ping = lambda: None  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self._run, args=(project, engine), kwargs=timeouts, daemon=True)
        self.thread.start()

    def _run(self, project: str, engine: FakeEngine, **timeouts: float) -> None:
        self.result = program.serve(project, engine, listener=self.listener, **timeouts)

    def connect(self, project: str, heartbeat: float = 0.1) -> host.Reaper:
        sock = host._handshake("127.0.0.1", self.port, project, timeout=2)
        return host.Reaper(
            project,
            client=None,
            container="fake",
            host="127.0.0.1",
            port=self.port,
            sock=sock,
            heartbeat=heartbeat,
        )  # type: ignore[arg-type]

    def wait(self, timeout: float = 10) -> str | None:
        self.thread.join(timeout)
        return self.result


@pytest.fixture
def project_objects() -> Iterator[FakeEngine]:
    yield FakeEngine(
        {
            "container": [_of("shop", "Id", "c1"), _of("shop-2", "Id", "neighbour")],
            "network": [_of("shop", "Id", "n1")],
            "volume": [],
        }
    )


def test_release_ends_the_reaper_and_removes_nothing(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=0.3, heartbeat_timeout=1, connect_timeout=5)
    reaper = served.connect("shop")
    time.sleep(0.5)
    assert reaper.release() is True
    assert reaper.state == "released"
    assert served.wait() == "released"
    assert project_objects.removed == []
    assert reaper.release() is False  # idempotent
    assert reaper.close() is False


def test_close_removes_the_project_at_once(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=30, heartbeat_timeout=30, connect_timeout=30)
    with served.connect("shop") as reaper:
        pass
    assert reaper.state == "reaped"
    assert served.wait() == "reaped"
    assert sorted(project_objects.removed) == [("container", "c1"), ("network", "n1")]


def test_a_killed_run_is_reaped_after_the_grace(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=0.5, heartbeat_timeout=5, connect_timeout=5)
    reaper = served.connect("shop")
    reaper._stop.set()  # the process is gone: no heartbeat, and its kernel closes the socket
    reaper._thread.join()
    dropped = time.monotonic()
    assert reaper._sock is not None
    reaper._sock.close()
    assert served.wait() == "reaped"
    assert 0.5 <= time.monotonic() - dropped < 3
    assert sorted(project_objects.removed) == [("container", "c1"), ("network", "n1")]


def test_a_silent_run_is_reaped_after_the_heartbeat_timeout(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=0.3, heartbeat_timeout=1, connect_timeout=5)
    reaper = served.connect("shop")
    reaper._stop.set()  # frozen: the connection stays open, nothing is sent
    reaper._thread.join()
    assert served.wait() == "reaped"
    assert ("container", "c1") in project_objects.removed


def test_heartbeats_keep_the_project(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=0.3, heartbeat_timeout=0.5, connect_timeout=5)
    reaper = served.connect("shop", heartbeat=0.1)
    time.sleep(1.2)
    assert project_objects.removed == []
    assert reaper.release() is True


def test_a_reconnect_within_the_grace_keeps_the_project(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=1, heartbeat_timeout=5, connect_timeout=5)
    reaper = served.connect("shop", heartbeat=0.1)
    with reaper._lock:
        assert reaper._sock is not None
        reaper._sock.shutdown(socket.SHUT_RDWR)  # the connection breaks; the heartbeat thread reconnects
    time.sleep(1.5)
    assert reaper.state == "guarding"
    assert project_objects.removed == []
    assert reaper.release() is True


def test_a_hello_for_another_project_is_refused(project_objects: FakeEngine) -> None:
    served = Served("shop", project_objects, grace=0.3, heartbeat_timeout=1, connect_timeout=1)
    with pytest.raises(host.Refused, match="guards shop"):
        host._handshake("127.0.0.1", served.port, "shop-2", timeout=2)
    # The refused connection counts for nothing: nobody connected, so the project goes after 1 s.
    assert served.wait() == "reaped"
