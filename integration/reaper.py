"""The reaper: remove a run's compose project when the run's process dies without removing it itself.

A run that is killed (SIGKILL, a machine that loses the process) cannot tear its stack down. So, next to
the stack, it starts a small container on the engine, like testcontainers' Ryuk: `start_reaper(project,
client=..., labels=...)`. The reaper mounts the engine's socket, publishes one TCP port on 127.0.0.1 and
waits for the run's process to connect; the process keeps that connection open and sends a heartbeat
every second from a daemon thread. When the connection drops without a RELEASE (the kernel closes the
socket of a killed process) and no new one comes within a 5 s grace, or when no heartbeat arrived for
10 s, the reaper removes every container, network and volume whose label `com.docker.compose.project`
is exactly the guarded project, and exits. `Reaper.release()` is the graceful end: the run tore the
stack down itself (or keeps it on purpose), and the reaper exits removing nothing. The reaper runs with
`--rm`, so it leaves nothing behind either; being a container on the engine, it works the same when the
engine runs in a VM or on another machine.

The program (`integration/standins/reaper/reaper.py`, standard library only, the engine API over the
unix socket) runs on `integration-local/reaper`, built from the python stand-in and reused while its
recipe hash label matches, like the stand-ins (`reaper_image`).

Configuration from the environment: `INTEGRATION_REAPER_SOCKET` (the engine's socket as the engine's
host sees it; default: the path of a `unix://` DOCKER_HOST under /run or /var/run, else
/var/run/docker.sock) and `INTEGRATION_REAPER=0`, which `reaper_enabled()` reads for callers that let
users switch the reaper off.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Mapping

from python_on_whales import Container, DockerClient
from python_on_whales.exceptions import DockerException, NoSuchContainer, NoSuchImage

from .baseimages import (
    LABEL_RECIPE_HASH,
    OFFLINE_ENV,
    RECIPES,
    configured_base_images,
    ensure_standin,
    standin_for,
)
from .errors import EngineError
from .model import LABEL_SERVICE, OFFLINE_PYTHON_IMAGE
from .podman import classic_build_quietly, is_podman

log = logging.getLogger("integration.reaper")

REAPER_IMAGE = "integration-local/reaper:1"
RECIPE = RECIPES / "reaper"
RECIPE_FILES = ("Dockerfile", "reaper.py")  # what the image is built from, and hashed
# Labels on the reaper container; the program reads the same names (integration/standins/reaper).
LABEL_GUARDS = "io.integration.reaper.project"  # the compose project it guards
LABEL_STARTED = "io.integration.reaper.started"  # time.time_ns() of its start: order among one project's
PROJECT_LABEL = "com.docker.compose.project"
CONTAINER_PORT = 8765
ENGINE_SOCKET = "/var/run/docker.sock"  # where the reaper finds the socket inside its container
SOCKET_ENV = "INTEGRATION_REAPER_SOCKET"
ENABLED_ENV = "INTEGRATION_REAPER"
HEARTBEAT_EVERY = 1.0  # seconds between two heartbeats of the run's process
HEARTBEAT_TIMEOUT = 10.0  # the reaper's: silence for this long counts as a dead run
GRACE = 5.0  # the reaper's: a reconnect within this long after a drop cancels the removal
CONNECT_TIMEOUT = 10.0  # the reaper's: no run connected within this long of its start -> remove
START_TIMEOUT = 15.0  # start_reaper gives up (and removes the reaper) after this long
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_image_checked: dict[tuple[str, ...], str] = {}  # docker command -> reaper image, once per process


def reaper_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when $INTEGRATION_REAPER is 0, false, no or off."""
    environ = os.environ if environ is None else environ
    return environ.get(ENABLED_ENV, "").strip().lower() not in {"0", "false", "no", "off"}


def recipe_hash() -> str:
    """The hash of the reaper's recipe: its Dockerfile and program (nothing else in the folder counts)."""
    digest = hashlib.sha256(b"reaper|")
    for name in RECIPE_FILES:
        digest.update(name.encode() + b"\0" + (RECIPE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _client_key(client: DockerClient) -> tuple[str, ...]:
    return tuple(str(part) for part in client.client_config.docker_cmd)


def _recipe_hash_of(client: DockerClient, image: str) -> str | None:
    try:
        return (client.image.inspect(image).config.labels or {}).get(LABEL_RECIPE_HASH)
    except NoSuchImage:
        return None


def _python_base(client: DockerClient) -> str:
    """The python image the reaper is built on: the stand-in, else the configured python image (pulled
    if need be and allowed), else the stand-in built from Debian packages."""
    if client.image.exists(OFFLINE_PYTHON_IMAGE):
        return OFFLINE_PYTHON_IMAGE
    configured = configured_base_images().python
    if client.image.exists(configured):
        return configured
    if os.environ.get(OFFLINE_ENV, "") in ("", "0"):
        with contextlib.suppress(DockerException):
            client.image.pull(configured, quiet=True)
            return configured
    ensure_standin(standin_for("python", OFFLINE_PYTHON_IMAGE), client)
    return OFFLINE_PYTHON_IMAGE


def reaper_image(client: DockerClient) -> str:
    """The reaper image, built unless one with the current recipe hash exists; checked once per process
    and engine."""
    key = _client_key(client)
    if key in _image_checked:
        return _image_checked[key]
    wanted = recipe_hash()
    if _recipe_hash_of(client, REAPER_IMAGE) != wanted:
        base = _python_base(client)
        log.info("building the reaper image %s on %s", REAPER_IMAGE, base)
        try:
            if is_podman(client):
                # why: podman serves no BuildKit, so buildx cannot build there; the classic builder can.
                classic_build_quietly(
                    client,
                    RECIPE,
                    tags=[REAPER_IMAGE],
                    labels={LABEL_RECIPE_HASH: wanted},
                    build_args={"BASE_IMAGE": base},
                )
            else:
                client.build(
                    RECIPE,
                    tags=[REAPER_IMAGE],
                    labels={LABEL_RECIPE_HASH: wanted},
                    build_args={"BASE_IMAGE": base},
                    load=True,
                    progress=False,
                )
        except DockerException as exc:
            tail = "\n".join((exc.stderr or str(exc)).strip().splitlines()[-15:])
            message = f"building the reaper image {REAPER_IMAGE} from {RECIPE} failed:\n{tail}"
            raise EngineError(message) from exc
    _image_checked[key] = REAPER_IMAGE
    return REAPER_IMAGE


def engine_socket(client: DockerClient | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The engine's socket as a path on the engine's host, for the reaper's bind mount.

    $INTEGRATION_REAPER_SOCKET wins; then the path of a `unix://` host (the client's, else $DOCKER_HOST)
    under /run or /var/run (a rootless engine's /run/user/<uid>/docker.sock); else /var/run/docker.sock,
    which is right for a remote engine and for Docker Desktop, whose VM has its socket there.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(SOCKET_ENV, "").strip()
    if override:
        return override
    host = (client.client_config.host if client is not None else None) or environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if path.startswith(("/run/", "/var/run/")):
            return path
    return ENGINE_SOCKET


def check_project(project: str) -> None:
    if not _PROJECT_RE.fullmatch(project or ""):
        raise ValueError(f"{project!r} is not a compose project name ([a-z0-9][a-z0-9_-]*)")


def reaper_labels(project: str, labels: Mapping[str, str], started_ns: int) -> dict[str, str]:
    """The reaper container's labels: the caller's (the toolkit's own, e.g. io.integration.system), the
    service name "reaper", the guarded project and the start time. A compose label is refused: the
    reaper would be part of a compose project, and `down --remove-orphans` or itself would remove it."""
    compose = sorted(key for key in labels if key.startswith("com.docker.compose."))
    if compose:
        raise ValueError(f"the reaper must not carry compose labels: {', '.join(compose)}")
    return {LABEL_SERVICE: "reaper", **labels, LABEL_GUARDS: project, LABEL_STARTED: str(started_ns)}


class Reaper:
    """The run's end of a reaper: its connection, kept alive by a daemon thread's heartbeats."""

    def __init__(
        self,
        project: str,
        *,
        client: DockerClient,
        container: str,
        host: str,
        port: int,
        sock: socket.socket,
        heartbeat: float = HEARTBEAT_EVERY,
    ) -> None:
        self.project = project
        self.client = client
        self.container = container  # the reaper container's name
        self.host = host
        self.port = port
        self.state = "guarding"  # then "released", "reaped" or "lost" (the reaper went away)
        self.start_seconds = 0.0  # how long start_reaper took
        self._sock: socket.socket | None = sock
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"reaper-{project}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Reaper {self.container} of {self.project} on {self.host}:{self.port}: {self.state}>"

    # -- the two ends ------------------------------------------------------------------------------

    def release(self, timeout: float = 5.0) -> bool:
        """The graceful end: the run removed its project itself (or keeps it): the reaper exits and
        removes nothing. Returns whether the reaper confirmed; idempotent."""
        return self._finish("RELEASE", "BYE", "released", timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """End the guard: unless released, have the reaper remove the project now (what a killed run's
        project gets, without the wait) and wait up to `timeout` for it. Idempotent."""
        return self._finish("REAP", "DONE", "reaped", timeout)

    def _finish(self, message: str, answer: str, state: str, timeout: float) -> bool:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self._heartbeat + 1)
        with self._lock:
            if self.state != "guarding":
                return False
            sock, self._sock = self._sock, None
            confirmed = False
            if sock is not None:
                try:
                    sock.settimeout(timeout)
                    sock.sendall(message.encode() + b"\n")
                    confirmed = _read_line(sock).startswith(answer)
                except OSError:
                    confirmed = False
                finally:
                    sock.close()
            self.state = state if confirmed else "lost"
        if not confirmed:
            log.warning("the reaper %s of %s did not confirm %s", self.container, self.project, message)
        return confirmed

    # -- the heartbeat thread ----------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat):
            with self._lock:
                if self.state != "guarding" or self._stop.is_set():
                    return
                if self._sock is not None and self._send_ping(self._sock):
                    continue
                # The connection broke (an engine hiccup, a proxy restart): the reaper waits GRACE for
                # a new HELLO before it removes anything.
                if self._sock is not None:
                    self._sock.close()
                self._sock = self._reconnect()
                if self._sock is None:
                    self.state = "lost"
                    log.warning(
                        "lost the reaper %s of %s: the project is unguarded", self.container, self.project
                    )
                    return

    @staticmethod
    def _send_ping(sock: socket.socket) -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not sock.recv(1024):
                return False  # the reaper closed the connection
            sock.sendall(b"PING\n")
        except OSError:
            return False
        return True

    def _reconnect(self) -> socket.socket | None:
        deadline = time.monotonic() + GRACE - 1.0
        while time.monotonic() < deadline and not self._stop.is_set():
            with contextlib.suppress(OSError):
                return _handshake(self.host, self.port, self.project, timeout=1.0)
            time.sleep(0.2)
        return None


def _read_line(sock: socket.socket, limit: int = 1024) -> str:
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = sock.recv(limit)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


class Refused(Exception):
    """The reaper answered NO: it guards another project or cannot reach the engine."""


def _handshake(host: str, port: int, project: str, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(f"HELLO {project}\n".encode())
        answer = _read_line(sock)
    except OSError:
        sock.close()
        raise
    if answer == f"OK {project}":
        sock.settimeout(5.0)
        return sock
    sock.close()
    if answer.startswith("NO"):
        raise Refused(answer[2:].strip())
    # Docker's proxy accepts before the container listens, then closes: try again.
    raise ConnectionError(f"no answer from the reaper ({answer!r})")


def _host_port(container: Container) -> int:
    for binding in (container.network_settings.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []:
        port = binding.get("HostPort") if isinstance(binding, dict) else getattr(binding, "host_port", None)
        if port:
            return int(port)
    raise EngineError(f"the reaper {container.name} publishes no port for {CONTAINER_PORT}/tcp")


def _remove(client: DockerClient, container: str) -> None:
    with contextlib.suppress(DockerException):
        client.container.remove(container, force=True)


def _logs(client: DockerClient, container: str) -> str:
    try:
        logs = client.container.logs(container, tail=15)
    except DockerException:
        return "(no logs: the container is gone)"
    text = logs if isinstance(logs, str) else "".join(chunk.decode(errors="replace") for _, chunk in logs)
    return text.strip()


def start_reaper(
    project: str,
    *,
    client: DockerClient,
    labels: Mapping[str, str],
    host: str = "127.0.0.1",
) -> Reaper:
    """Start a reaper for compose project `project` and connect to it; see the module's docstring.

    `labels` go on the reaper container (the toolkit's own, e.g. `{LABEL_SYSTEM: system.name}`). Older
    reapers of the same project (an earlier, killed run's) are removed by the new one before it answers,
    so that their belated removal cannot hit this run's stack. Raises EngineError when the reaper cannot
    be started or cannot reach the engine; it is then removed.
    """
    check_project(project)
    started = time.monotonic()
    started_ns = time.time_ns()
    all_labels = reaper_labels(project, labels, started_ns)
    image = reaper_image(client)
    name = f"integration-reaper-{project}-{uuid.uuid4().hex[:8]}"
    try:
        container = client.run(
            image,
            detach=True,
            remove=True,
            name=name,
            labels=all_labels,
            envs={
                "REAPER_PROJECT": project,
                "REAPER_NAME": name,
                "REAPER_STARTED": str(started_ns),
                "REAPER_PORT": str(CONTAINER_PORT),
                "REAPER_SOCKET": ENGINE_SOCKET,
                "REAPER_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "REAPER_GRACE": str(GRACE),
                "REAPER_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            },
            publish=[(f"{host}:", CONTAINER_PORT)],
            volumes=[(engine_socket(client), ENGINE_SOCKET)],
            pull="never",
        )
    except DockerException as exc:
        _remove(client, name)
        raise EngineError(
            f"starting the reaper of {project} failed: {(exc.stderr or str(exc)).strip()[-400:]}"
        ) from exc
    try:
        port = _host_port(container)
        deadline = started + START_TIMEOUT
        while True:
            try:
                sock = _handshake(host, port, project, timeout=2.0)
                break
            except Refused as exc:
                raise EngineError(f"the reaper of {project} refused to start: {exc}") from exc
            except OSError:
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"the reaper {name} of {project} did not answer on {host}:{port} within "
                        f"{START_TIMEOUT:g} s; its last lines:\n{_logs(client, name)}"
                    ) from None
                time.sleep(0.02)
    except (EngineError, DockerException, NoSuchContainer) as exc:
        logs = _logs(client, name)
        _remove(client, name)
        if isinstance(exc, EngineError):
            raise
        raise EngineError(f"the reaper {name} of {project} is gone: {exc}\n{logs}") from exc
    reaper = Reaper(project, client=client, container=name, host=host, port=port, sock=sock)
    reaper.start_seconds = time.monotonic() - started
    log.debug("reaper %s of %s ready in %.3f s", name, project, reaper.start_seconds)
    return reaper


def reapers(client: DockerClient, project: str | None = None) -> list[str]:
    """Names of the reaper containers on the engine (of `project` only, when given)."""
    label = LABEL_GUARDS if project is None else f"{LABEL_GUARDS}={project}"
    for attempt in range(5):
        try:
            return [c.name for c in client.container.list(all=True, filters=[("label", label)])]
        except NoSuchContainer:  # listed, then removed before python-on-whales inspected it
            if attempt == 4:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")
