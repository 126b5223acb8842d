"""The reaper program: remove one compose project's containers, networks and volumes once the run that
owns the project is gone, then exit.

It runs as a container on the engine (integration/reaper.py starts it, image `integration-local/reaper`)
with the engine's socket mounted at /var/run/docker.sock, and talks to the engine API over that socket
with the standard library only. The run's process connects to its TCP port and keeps the connection:

    run -> reaper   HELLO <project>      first line; answered OK <project> (or NO <reason>, then closed)
    run -> reaper   PING                 every second or so; any line counts as a heartbeat
    run -> reaper   RELEASE              the run ended the project itself (or keeps it): BYE, exit
    run -> reaper   REAP                 remove the project now: DONE <count>, exit

The project is removed when no run connected within CONNECT_TIMEOUT of the start, when the last
connection dropped (a killed process: its kernel closes the socket) and no new one said HELLO within
GRACE, or when a connection stayed silent for HEARTBEAT_TIMEOUT (a machine that lost the process or the
network; the silent connection is then dropped and GRACE applies). Only what carries the label
`com.docker.compose.project` with exactly the guarded project's name is removed. Before it answers its
first HELLO, the reaper removes the older reapers of the same project (an earlier run's, whose belated
removal would otherwise hit the new run's stack).

Configuration, from the environment: REAPER_PROJECT (required), REAPER_NAME (this container's name),
REAPER_STARTED (its start time in ns, the order among reapers of one project), REAPER_PORT (8765),
REAPER_SOCKET (/var/run/docker.sock), REAPER_HEARTBEAT_TIMEOUT (10), REAPER_GRACE (5),
REAPER_CONNECT_TIMEOUT (10), in seconds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterable
from functools import partial

PROJECT_LABEL = "com.docker.compose.project"
GUARDS_LABEL = "io.integration.reaper.project"  # on a reaper: the project it guards
STARTED_LABEL = "io.integration.reaper.started"  # on a reaper: time.time_ns() of its start
DEFAULT_PORT = 8765
DEFAULT_SOCKET = "/var/run/docker.sock"
HEARTBEAT_TIMEOUT = 10.0
GRACE = 5.0
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 5.0  # a connection that has not said HELLO by then is dropped
TICK = 0.2  # seconds between two looks at the clock when nothing arrives


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} reaper: {message}", file=sys.stderr, flush=True)


# -- when to reap: pure, driven by the caller's clock ---------------------------------------------------


class Watch:
    """The state of the run's connections and the verdict: when, and why, the project must go."""

    def __init__(
        self,
        now: float,
        *,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        grace: float = GRACE,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.started = now
        self.heartbeat_timeout = heartbeat_timeout
        self.grace = grace
        self.connect_timeout = connect_timeout
        self.last_heard: dict[Hashable, float] = {}
        self.ever_connected = False
        self.lost_at: float | None = None  # when the last connection went

    def connected(self, key: Hashable, now: float) -> None:
        self.last_heard[key] = now
        self.ever_connected = True
        self.lost_at = None

    def heard(self, key: Hashable, now: float) -> None:
        if key in self.last_heard:
            self.last_heard[key] = now

    def disconnected(self, key: Hashable, now: float) -> None:
        if self.last_heard.pop(key, None) is not None and not self.last_heard:
            self.lost_at = now

    def silent(self, now: float) -> list[Hashable]:
        """Connections that sent nothing for heartbeat_timeout: to be dropped (then disconnected)."""
        return [key for key, heard in self.last_heard.items() if now - heard >= self.heartbeat_timeout]

    def verdict(self, now: float) -> str | None:
        """Why the project must be removed now, or None while a run holds it (or may come back)."""
        if not self.ever_connected:
            if now - self.started >= self.connect_timeout:
                return f"no run connected within {self.connect_timeout:g} s"
            return None
        if self.last_heard or self.lost_at is None:
            return None
        if now - self.lost_at >= self.grace:
            return f"the run's connection dropped and no run came back within {self.grace:g} s"
        return None


# -- the engine API over its unix socket ----------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class EngineError(Exception):
    pass


def label_filter(label: str, value: str) -> str:
    """The engine API's `filters` query value that selects `label=value` exactly."""
    return json.dumps({"label": [f"{label}={value}"]})


def api_path(path: str, **query: str) -> str:
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


class Engine:
    """The few engine API calls the reaper makes; one short HTTP connection per call."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, method: str, path: str, ok: Iterable[int] = (200, 204)) -> object:
        connection = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:
            raise EngineError(f"{method} {path}: {exc}") from exc
        finally:
            connection.close()
        if response.status not in ok:
            raise EngineError(f"{method} {path}: {response.status} {body[:300]!r}")
        return json.loads(body) if body.strip() else None

    def ping(self) -> None:
        connection = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            connection.request("GET", "/_ping")
            response = connection.getresponse()
            response.read()
        except OSError as exc:
            raise EngineError(f"the engine at {self.socket_path} does not answer: {exc}") from exc
        finally:
            connection.close()
        if response.status != 200:
            raise EngineError(f"the engine at {self.socket_path} answered /_ping with {response.status}")

    def containers(self, label: str, value: str) -> list[dict]:
        found = self.call("GET", api_path("/containers/json", all="1", filters=label_filter(label, value)))
        return list(found or [])

    def networks(self, label: str, value: str) -> list[dict]:
        return list(self.call("GET", api_path("/networks", filters=label_filter(label, value))) or [])

    def volumes(self, label: str, value: str) -> list[dict]:
        found = self.call("GET", api_path("/volumes", filters=label_filter(label, value)))
        return list((found or {}).get("Volumes") or []) if isinstance(found, dict) else []

    def remove_container(self, container: dict) -> None:
        # 404: gone meanwhile; 409: its removal is already in progress.
        path = api_path(f"/containers/{container['Id']}", force="1", v="1")
        self.call("DELETE", path, ok=(200, 204, 404, 409))

    def remove_network(self, network: dict) -> None:
        self.call("DELETE", f"/networks/{network['Id']}", ok=(200, 204, 404))

    def remove_volume(self, volume: dict) -> None:
        self.call("DELETE", f"/volumes/{urllib.parse.quote(volume['Name'], safe='')}", ok=(200, 204, 404))


def labelled(items: Iterable[dict], label: str, value: str) -> list[dict]:
    """The items whose label `label` is exactly `value` (the engine's filter, checked once more)."""
    return [item for item in items if (item.get("Labels") or {}).get(label) == value]


def reap(
    engine: Engine,
    project: str,
    *,
    settle: float = 0.5,
    budget: float = 20.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Remove every container, network and volume of compose project `project`; the number removed.

    Passes repeat until two in a row find nothing (a `compose up` that outlived its run may still be
    creating containers), within `budget` seconds.
    """
    if not project:
        raise ValueError("no project to reap")
    removed = 0
    empty_passes = 0
    deadline = clock() + budget
    # Containers first: a network or volume still in use cannot be removed.
    steps: list[tuple[str, Callable[[], list[dict]], Callable[[dict], None]]] = [
        ("container", partial(engine.containers, PROJECT_LABEL, project), engine.remove_container),
        ("network", partial(engine.networks, PROJECT_LABEL, project), engine.remove_network),
        ("volume", partial(engine.volumes, PROJECT_LABEL, project), engine.remove_volume),
    ]
    while empty_passes < 2 and clock() < deadline:
        found = 0
        for kind, list_them, remove in steps:
            try:
                items = labelled(list_them(), PROJECT_LABEL, project)
            except EngineError as exc:
                log(f"listing {kind}s failed: {exc}")
                found += 1
                continue
            for item in items:
                found += 1
                try:
                    remove(item)
                    removed += 1
                    log(f"removed {kind} {display_name(item)}")
                except EngineError as exc:
                    log(f"removing {kind} {display_name(item)} failed (tried again): {exc}")
        empty_passes = empty_passes + 1 if found == 0 else 0
        if empty_passes < 2:
            sleep(settle)
    return removed


def display_name(item: dict) -> str:
    names = item.get("Names") or []
    if names:
        return str(names[0]).lstrip("/")
    return str(item.get("Name") or item.get("Id", "?"))[:64]


def older_reapers(reapers: Iterable[dict], project: str, me: str, started: int) -> list[dict]:
    """Other reapers of `project` that started before this one (`me`: this container's name)."""
    older = []
    for reaper in reapers:
        labels = reaper.get("Labels") or {}
        if labels.get(GUARDS_LABEL) != project:
            continue
        if f"/{me}" in (reaper.get("Names") or []):
            continue
        try:
            theirs = int(labels.get(STARTED_LABEL, "0"))
        except ValueError:
            theirs = 0
        name = display_name(reaper)
        if (theirs, name) < (started, me):
            older.append(reaper)
    return older


def retire_older_reapers(engine: Engine, project: str, me: str, started: int) -> None:
    try:
        for reaper in older_reapers(engine.containers(GUARDS_LABEL, project), project, me, started):
            engine.remove_container(reaper)
            log(f"removed the older reaper {display_name(reaper)} of {project}")
    except EngineError as exc:
        log(f"looking for older reapers of {project} failed: {exc}")


# -- the server -------------------------------------------------------------------------------------------


class Client:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.accepted = now
        self.buffer = b""
        self.greeted = False

    def send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # gone: the read side notices
            self.sock.sendall(line.encode() + b"\n")


def serve(
    project: str,
    engine: Engine,
    *,
    port: int = DEFAULT_PORT,
    me: str = "",
    started: int = 0,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    grace: float = GRACE,
    connect_timeout: float = CONNECT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    listener: socket.socket | None = None,
) -> str:
    """Guard `project` until the run releases it ("released"), is gone ("reaped"), or the engine cannot
    be reached ("broken"). `listener`: a listening socket to use instead of one on `port`."""
    if listener is None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(8)
    port = listener.getsockname()[1]
    listener.setblocking(False)
    watch = Watch(clock(), heartbeat_timeout=heartbeat_timeout, grace=grace, connect_timeout=connect_timeout)
    broken: str | None = None
    try:
        engine.ping()
    except EngineError as exc:
        broken = str(exc)
        log(broken)
    if broken is None:
        retire_older_reapers(engine, project, me, started)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    clients: dict[socket.socket, Client] = {}

    def drop(client: Client) -> None:
        selector.unregister(client.sock)
        clients.pop(client.sock, None)
        client.sock.close()
        watch.disconnected(client.sock, clock())

    log(f"guarding compose project {project} on port {port}")
    while True:
        for key, _ in selector.select(timeout=TICK):
            now = clock()
            if key.fileobj is listener:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    continue
                sock.settimeout(2.0)
                clients[sock] = Client(sock, now)
                selector.register(sock, selectors.EVENT_READ)
                continue
            client = clients[key.fileobj]  # type: ignore[index]
            try:
                data = client.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                drop(client)
                continue
            client.buffer += data
            while b"\n" in client.buffer:
                raw, client.buffer = client.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                if not client.greeted:
                    if line != f"HELLO {project}":
                        client.send(f"NO this reaper guards {project}")
                        drop(client)
                        break
                    if broken is not None:
                        client.send(f"NO {broken}")
                        return "broken"
                    client.greeted = True
                    watch.connected(client.sock, now)
                    client.send(f"OK {project}")
                    continue
                watch.heard(client.sock, now)
                if line == "RELEASE":
                    log(f"released: the run ended and left {project} to itself")
                    client.send("BYE")
                    return "released"
                if line == "REAP":
                    log(f"asked to remove {project}")
                    count = reap(engine, project)
                    client.send(f"DONE {count}")
                    return "reaped"
        now = clock()
        for client in list(clients.values()):
            if not client.greeted and now - client.accepted >= HANDSHAKE_TIMEOUT:
                drop(client)
        for sock in watch.silent(now):
            log(f"no heartbeat for {heartbeat_timeout:g} s: dropping the connection")
            drop(clients[sock])  # type: ignore[index]
        reason = watch.verdict(now)
        if reason is not None and broken is not None:
            log(f"cannot remove compose project {project} ({reason}): {broken}")
            return "broken"
        if reason is not None:
            log(f"removing compose project {project}: {reason}")
            count = reap(engine, project)
            log(f"removed {count} objects of {project}; exiting")
            return "reaped"


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def main() -> int:
    # PID 1 ignores signals without a handler: `docker stop` would wait its 10 s for nothing.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    project = os.environ.get("REAPER_PROJECT", "").strip()
    if not project:
        log("REAPER_PROJECT is not set")
        return 2
    serve(
        project,
        Engine(os.environ.get("REAPER_SOCKET") or DEFAULT_SOCKET),
        port=int(os.environ.get("REAPER_PORT") or DEFAULT_PORT),
        me=os.environ.get("REAPER_NAME", ""),
        started=int(os.environ.get("REAPER_STARTED") or 0),
        heartbeat_timeout=_seconds("REAPER_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT),
        grace=_seconds("REAPER_GRACE", GRACE),
        connect_timeout=_seconds("REAPER_CONNECT_TIMEOUT", CONNECT_TIMEOUT),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
