"""The start of a stack: the broker and the databases first, each service as soon as what it needs answers.

`Startup(stack).run()` is what `Stack` runs for an `up` (fresh, or a reused stack brought up to date):

1. `compose up --no-start` creates the broker's and the databases' containers (and the network), which
   are checked (step 2) and started (step 3) at once; then a second one creates the services' (and
   removes the containers of services the file no longer has) while the broker boots;
2. before anything starts, every container's image is checked: a service container must have the image id
   verified fresh before `up` (`Stack.expected_images`), the broker and each database the id their image
   tag names now (a stand-in rebuilt on a new base is a new image, and a container created from the old one
   is refused);
3. the broker and the databases start together; the host probes each one through its published port
   with its own protocol (health.probe_postgres, health.probe_amqp plus the management API) every 50 ms,
   instead of waiting for the engine's next 1 s health check;
4. each service starts the moment everything it needs is ready: its database, the broker when it uses
   it, every service it calls (answered on its health route), and in a shared xdist stack the later
   workers' databases and virtual hosts; the host probes its health route every 50 ms.

The compose file keeps its health checks and `depends_on` conditions, so `docker compose up` on it
alone starts in a safe order too; the toolkit's own start does the same ordering from the host, sooner.
A dying container ends the start at once with its last log lines; no wait outlasts the health timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import httpx
from python_on_whales.exceptions import DockerException

from .baseimages import ImageCatalog
from .endpoints import ContainerInfo, MissingEndpoint
from .endpoints import host as published_host
from .errors import StackError
from .health import (
    HealthTimeout,
    Probe,
    StackMemberExited,
    collapse_repeats,
    likely_cause,
    probe_all,
    probe_amqp,
    probe_once,
    probe_postgres,
    wait_for_service_health,
    wait_until_ready,
)
from .model import (
    BROKER_AMQP_PORT,
    BROKER_MANAGEMENT_PORT,
    BROKER_PASSWORD,
    BROKER_SERVICE,
    BROKER_USER,
    POSTGRES_PORT,
    StackEndpoints,
    copy_suffix,
    for_worker,
)
from .workers import WorkerSetupError, prepare_workers

if TYPE_CHECKING:
    from .stack import Stack

HEALTH_POLL_INTERVAL = 0.05  # seconds between two probes of one container while the stack starts
HEALTH_LOG_LINES = 20  # a health failure's message shows this many of the container's last log lines
WORKERS_READY = "(workers' databases and virtual hosts)"  # a pseudo-need of a shared stack's services
BROKER_HEAD_START = 10.0  # seconds a database waits at most for the broker's `docker start` to return
INSPECT_EVERY = 1.0  # seconds between two `docker inspect`s that look for a container that died


class Startup:
    """One start of `stack`'s compose project (module docstring); `run` raises StackError on failure
    and DockerException when compose or the engine refused a call (the stack retries a port race)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.began = 0.0
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._death = ""
        # Set once the broker's `docker start` returned (or there is none to start): see _start_and_wait.
        self._broker_started = threading.Event()

    # -- the sequence ----------------------------------------------------------------------------------

    def run(self) -> None:
        stack = self.stack
        self.began = time.monotonic()
        self._abort.clear()
        self._broker_started.clear()
        needs = self.needs()
        infrastructure = sorted(self._infrastructure())
        ready: set[str] = set()
        started: set[str] = set()
        probes: dict[Future[float], str] = {}
        early: dict[str, ContainerInfo] = {}
        with ThreadPoolExecutor(max_workers=len(needs) + 1) as pool:
            try:
                # The broker's boot is the critical path: its container and the databases' are created,
                # checked and started first; compose creates the services' containers meanwhile.
                if infrastructure:
                    self._create(infrastructure)
                    early.update((i.service, i) for i in stack.containers() if i.service in infrastructure)
                    self.verify_images(list(early.values()))
                    if BROKER_SERVICE not in early:
                        self._broker_started.set()
                    for name in infrastructure:
                        if name in early and not needs[name]:
                            started.add(name)
                            probes[pool.submit(self._start_and_wait, name, early[name].container_id)] = name
                else:
                    self._broker_started.set()
                self._create(None)
                stack.timings["create"] = time.monotonic() - self.began
                infos = stack.containers()
                self.verify_images(infos)
                ids = {info.service: info.container_id for info in infos}
                missing = sorted(set(needs) - set(ids))
                if missing:
                    raise StackError(
                        stack._failure_message(f"compose created no container for {', '.join(missing)}")
                    )
                replaced = sorted(name for name in started if ids[name] != early[name].container_id)
                if replaced:  # never: the file did not change between the two calls
                    raise StackError(
                        stack._failure_message(f"compose recreated the started {', '.join(replaced)}")
                    )
                while True:
                    startable = sorted(n for n in needs if n not in started and needs[n] <= ready)
                    for name in startable:
                        started.add(name)
                        probes[pool.submit(self._start_and_wait, name, ids[name])] = name
                    if not probes:
                        break
                    done, _ = wait(probes, return_when=FIRST_COMPLETED)
                    for future in done:
                        name = probes.pop(future)
                        self._result(name, future)
                        ready.add(name)
                    if (
                        self._needs_workers()
                        and WORKERS_READY not in ready
                        and self._infrastructure() <= ready
                    ):
                        self.prepare_workers()
                        ready.add(WORKERS_READY)
            finally:
                self._abort.set()  # the probes still running end within one poll interval
        unmet = sorted(n for n in needs if n not in ready)
        if unmet:  # a need nothing provides (a call to an unknown service is refused when the model loads)
            raise StackError(stack._failure_message(f"nothing could start {', '.join(unmet)}"))
        stack.timings["start"] = time.monotonic() - self.began

    def _create(self, services: list[str] | None) -> None:
        """`compose up --no-start` of `services` (None: every service of the file), which also removes
        the containers of services the file no longer has."""
        self.stack.client.compose.up(
            services=services,
            detach=True,
            start=False,
            remove_orphans=True,
            pull="never",
            quiet=True,
            no_build=True,
        )

    def needs(self) -> dict[str, set[str]]:
        """Compose service -> what must be ready before it starts."""
        stack = self.stack
        system = stack.system
        needs: dict[str, set[str]] = {name: set() for name in self._infrastructure()}
        for name, service in stack.service_of.items():
            spec = system.service(service)
            worker = self._worker_of(name, service)
            wanted: set[str] = {for_worker(callee, worker) for callee in spec.calls}
            if spec.database is not None:
                wanted.add(spec.db_service)
            if system.needs_broker and spec.uses_broker:
                wanted.add(BROKER_SERVICE)
            if self._needs_workers():
                wanted.add(WORKERS_READY)
            needs[name] = wanted
        return needs

    def _infrastructure(self) -> set[str]:
        assert self.stack.ports is not None
        return {name for name in self.stack.ports.ports if name not in self.stack.service_of}

    def _needs_workers(self) -> bool:
        return len(self.stack.workers) > 1

    def _worker_of(self, name: str, service: str) -> str | None:
        """The copy suffix of a service container (`links-gw1` -> "gw1"), None for the serial stack's."""
        suffix = name.removeprefix(service).removeprefix("-")
        return suffix or None

    def _start_and_wait(self, name: str, container_id: str) -> float:
        """Start one container and wait until it is ready. Each in a thread of its own: `docker start`
        with several containers starts them one after the other, and the engine starts them in parallel.
        Starting a container that runs already (a reused stack's) does nothing."""
        if name != BROKER_SERVICE and name not in self.stack.service_of:
            # A database starts once the broker's start returned: the engine sets up the containers it
            # starts together one after another (networks, published ports), and the broker's boot is
            # the critical path: with seven at once its start ended at 2.1 s instead of 0.9 s. The
            # databases are ready long before the broker anyway.
            self._broker_started.wait(timeout=BROKER_HEAD_START)
        self.stack.timings[f"start {name}"] = time.monotonic() - self.began
        try:
            self.stack.client.container.start(container_id)
        finally:
            if name == BROKER_SERVICE:
                self._broker_started.set()
        return self._wait_ready(name)

    def _result(self, name: str, future: Future[float]) -> None:
        try:
            future.result()
        except HealthTimeout as exc:
            raise StackError(self.health_failure(name, exc)) from exc
        except StackMemberExited:
            raise  # it names the container that died, not the one that was waiting
        except StackError as exc:
            raise StackError(f"{name}: {exc}") from exc
        self.stack.timings[f"ready {name}"] = time.monotonic() - self.began

    # -- probes ----------------------------------------------------------------------------------------

    def _wait_ready(self, name: str) -> float:
        stack = self.stack
        url, probe, close = self._probe_of(name)
        try:
            waited = wait_until_ready(
                probe,
                url=url,
                name=name,
                timeout=self._budget(),
                interval=HEALTH_POLL_INTERVAL,
                report=stack.report,
                check_alive=self.check_alive,
            )
        finally:
            close()
        stack.answered[name] = time.time()
        return waited

    def _probe_of(self, name: str) -> tuple[str, Callable[[], Probe], Callable[[], None]]:
        """(what is probed, the probe, what closes its client) of one compose service."""
        stack = self.stack
        assert stack.ports is not None
        system = stack.system
        timeout = 1.0
        # Where the engine publishes the ports: 127.0.0.1, or a remote engine's host (integration.engine).
        address = published_host()
        if name == BROKER_SERVICE:
            amqp = stack.ports.host_port(name, BROKER_AMQP_PORT)
            management = f"http://{address}:{stack.ports.host_port(name, BROKER_MANAGEMENT_PORT)}"
            client = httpx.Client(timeout=timeout, verify=False, auth=(BROKER_USER, BROKER_PASSWORD))
            # The harness purges queues and the shared stack creates virtual hosts through the management
            # API: the broker is ready once both it and the AMQP listener serve.
            return (
                f"amqp://{address}:{amqp} and {management}/api/whoami",
                lambda: probe_all(
                    lambda: probe_amqp(address, amqp, timeout=timeout),
                    lambda: probe_once(client, f"{management}/api/whoami"),
                ),
                client.close,
            )
        if name in stack.service_of:
            spec = system.service(stack.service_of[name])
            url = f"http://{address}:{stack.ports.host_port(name, spec.port)}{spec.health_path}"
            client = httpx.Client(timeout=max(0.5, min(5.0, self._budget())), verify=False)
            return url, lambda: probe_once(client, url), client.close
        spec = next(s for s in system.services if s.db_service == name)
        port = stack.ports.host_port(name, POSTGRES_PORT)
        credentials = system.credentials
        database = spec.database or ""
        return (
            f"postgresql://{credentials.user}@{address}:{port}/{database}",
            lambda: probe_postgres(
                address,
                port,
                user=credentials.user,
                password=credentials.password,
                database=database,
                timeout=timeout,
            ),
            lambda: None,
        )

    def _budget(self) -> float:
        stack = self.stack
        if stack._deadline is not None:
            return max(1.0, stack._deadline - time.monotonic())
        return stack.health_timeout

    def check_alive(self) -> str | None:
        """A message once a container of the project has exited (or the start was called off)."""
        if self._abort.is_set():
            return self._death or "the start was called off"
        # One `docker inspect` per second at most, shared by the parallel waits; a wait never queues
        # behind another one's inspect (it takes a few hundred ms on a busy machine): it goes on
        # polling with the last answer.
        if not self._lock.acquire(blocking=False):
            return self._death or None
        try:
            if time.monotonic() - self._checked_at < INSPECT_EVERY:
                return self._death or None
            self._checked_at = time.monotonic()
            dead = [i for i in self.stack.containers() if i.state in ("exited", "dead")]
            self._death = (
                self.stack._failure_message(f"container {dead[0].name} exited while the stack was starting")
                if dead
                else ""
            )
            return self._death or None
        finally:
            self._lock.release()

    # -- checks and preparation ------------------------------------------------------------------------

    def verify_images(self, infos: list[ContainerInfo]) -> None:
        """Before anything starts: each service container has the image id verified fresh before `up`,
        and the broker and the databases the image their tag names now."""
        stack = self.stack
        verify_service_images(stack, infos)
        base = stack.system.base_images
        catalog = ImageCatalog(stack.client, [base.broker, base.postgres])  # one snapshot, two engine calls
        for info in infos:
            if info.service in stack.service_of:
                continue
            image = base.broker if info.service == BROKER_SERVICE else base.postgres
            current = catalog.image_id(image)
            if current is None:
                continue  # removed meanwhile: the start fails on its own, with the engine's message
            if info.image_id != current:
                raise StackError(
                    f"container {info.name} was created from image {info.image_id[:19]}, not {image} "
                    f"({current[:19]}) as it is now; the image changed while the stack was "
                    "starting. Start again"
                )

    def prepare_workers(self) -> None:
        """Create each later worker's databases and virtual host (integration.workers)."""
        stack = self.stack
        started = time.monotonic()
        try:
            prepare_workers(stack.system, stack.workers, stack.containers(), min(30.0, stack.health_timeout))
        except (WorkerSetupError, MissingEndpoint) as exc:
            raise StackError(stack._failure_message(str(exc))) from exc
        stack.timings["prepare workers"] = time.monotonic() - started

    def health_failure(self, name: str, exc: HealthTimeout) -> str:
        return health_failure(self.stack, name, exc)


def verify_service_images(stack: Stack, infos: list[ContainerInfo]) -> None:
    """Each service container must have the image id that was verified fresh before `up`."""
    for info in infos:
        expected = stack.expected_images.get(stack.service_of.get(info.service, ""))
        if expected and info.image_id != expected:
            raise StackError(
                f"container {info.name} runs image {info.image_id[:19]}, not the verified "
                f"{expected[:19]} of service {stack.service_of[info.service]}; an image changed while "
                "the stack was starting. Run the build again"
            )


def wait_for_services(stack: Stack, endpoints: StackEndpoints, timeout: float | None = None) -> None:
    """Wait until every service of every worker's endpoints answers its health route, in parallel (a
    reused stack's check); a dead container or a timeout ends the wait with one message."""
    everyone = list(stack.worker_endpoints.values()) or [endpoints]
    targets = [
        (
            for_worker(spec.name, copy_suffix(stack.workers, each.worker)),
            each.services[spec.name].url + spec.health_path,
        )
        for each in everyone
        for spec in stack.system.services
    ]
    startup = Startup(stack)
    budget = stack.health_timeout if timeout is None else timeout

    def wait_one(name: str, url: str) -> float:
        waited = wait_for_service_health(
            url,
            name=name,
            timeout=budget,
            interval=HEALTH_POLL_INTERVAL,
            report=stack.report,
            check_alive=startup.check_alive,
        )
        stack.answered[name] = time.time()
        return waited

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = [pool.submit(wait_one, name, url) for name, url in targets]
        try:
            for (name, _), future in zip(targets, futures, strict=True):
                try:
                    future.result()
                except HealthTimeout as exc:
                    raise StackError(health_failure(stack, name, exc)) from exc
                except StackMemberExited:
                    raise  # it names the container that died, not the one that was waiting
                except StackError as exc:
                    raise StackError(f"{name}: {exc}") from exc
        finally:
            startup._abort.set()


def health_failure(stack: Stack, name: str, exc: HealthTimeout) -> str:
    """One message for a container that never became ready: it, its last probe, its state and last log
    lines, and (for a service) the likely cause."""
    spec = stack.system.service(stack.service_of[name]) if name in stack.service_of else None
    try:
        info = next((i for i in stack.containers() if i.service == name), None)
    except DockerException:
        info = None
    logs = collapse_repeats(stack.logs_tail(info.name, HEALTH_LOG_LINES)) if info is not None else ""
    cause = likely_cause(exc.probe, logs, spec.health_path, spec.port) if spec is not None else None
    state = "no container"
    if info is not None:
        state = f"container {info.name} is {info.state}"
        if info.state in ("exited", "dead"):
            state += f" (exit code {info.exit_code})"
    what = f"GET {exc.url}" if spec is not None else exc.url
    kind = "service" if spec is not None else "container"
    parts = [
        f"{kind} {name} did not become healthy within {exc.waited:.0f}s: {what} last answered "
        f"{exc.probe}; {state}",
    ]
    if cause:
        parts.append(f"likely cause: {cause}")
    parts.append(f"its last log lines:\n{logs}" if logs else "it wrote no log lines")
    folder = stack.save_artifacts(f"{name} did not become healthy")
    if folder:
        parts.append(f"run folder with every container's logs: {folder}")
    return "\n".join(parts)
