"""The stack's lifecycle, through python-on-whales only: down, up, teardown, reuse.

The start itself (every container created at once, each started as soon as what it needs answers the
host, images checked before anything starts) is integration.startup's.

`Stack` is a context manager that owns every container, network and volume of one compose project:
whatever happens inside the `with` (a failed `up`, a failing test, Ctrl-C), leaving it runs `down`.
The project name is unique per checkout (a hash of the system root), so two checkouts never touch each
other's containers, and every run starts with a `down` of its own project, which clears what a killed
earlier run left behind.

Reuse mode (`reuse=True`, or $INTEGRATION_REUSE=1) leaves the healthy stack running on exit and records
it in `.reuse/<project>.json` in the compose folder: the compose file's hash, the host ports and the
container ids. The next `up` reuses the stack without a single compose call when the compose file it
would write is the recorded one, every container still runs, is healthy, and every service container
runs the image id just verified fresh. Otherwise it keeps the recorded ports, force-removes exactly the
containers that changed (a changed compose entry, a rebuilt image, a dead or unhealthy container, and
every container that depends on one of those) and runs `up`, which creates them again and leaves
the rest alone. A reused stack still holds the last run's data: the caller resets it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from .baseimages import ImageCatalog
from .compose import dump_compose, render_compose, write_atomically
from .diagnostics import logs_tail, port_race_headline, port_taken, save_run_folder
from .endpoints import (
    PROJECT_LABEL,
    ContainerInfo,
    MissingEndpoint,
    endpoints_of,
    inspect_containers,
    project_containers,
    published_database_url,
    published_ports,
)
from .engine import current_engine
from .errors import EngineError, StackError
from .health import wait_for_service_health as wait_for_service_health
from .model import (
    BROKER_SERVICE,
    DEFAULT_HEALTH_TIMEOUT,
    LABEL_SYSTEM,
    PortPlan,
    StackEndpoints,
    SystemSpec,
    copy_suffix,
    for_worker,
)
from .ports import engine_port_check, ephemeral_port, plan_ports, port_is_free, unclaimed_port
from .reaper import Reaper, reaper_enabled, start_reaper
from .reuse import ReuseState, reuse_blockers, sha256
from .settings import COMPOSE_DIR_ENV as COMPOSE_DIR_ENV
from .settings import PORT_BASE_ENV as PORT_BASE_ENV
from .settings import PROJECT_ENV as PROJECT_ENV
from .settings import REUSE_ENV as REUSE_ENV
from .settings import RunSettings
from .settings import default_compose_dir as default_compose_dir
from .settings import default_port_base as default_port_base
from .settings import project_name as project_name
from .settings import reuse_from_env as reuse_from_env
from .startup import HEALTH_LOG_LINES as HEALTH_LOG_LINES
from .startup import HEALTH_POLL_INTERVAL as HEALTH_POLL_INTERVAL
from .startup import Startup, verify_service_images, wait_for_services

Reporter = Callable[[str], None]

MIN_COMPOSE_VERSION = (2, 20)
LOG_TAIL_LINES = 50
STATE_FOLDER = ".reuse"  # in the compose folder; it ignores itself in git
SERVICE_LABEL = "com.docker.compose.service"
_checked_compose: dict[int, str] = {}


def check_compose(client: DockerClient) -> str:
    """The Compose version, or EngineError when it is missing or older than 2.20."""
    try:
        text = client.compose.version()
    except DockerException as exc:
        raise EngineError(
            "`docker compose` (Compose v2) does not answer: "
            f"{(exc.stderr or str(exc)).strip().splitlines()[-1:]}; "
            "install the compose plugin (scripts/install-docker-engine.sh does on Debian)"
        ) from exc
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise EngineError(f"cannot read the Compose version from {text!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_COMPOSE_VERSION:
        raise EngineError(
            f"Compose {match.group(0)} is too old; {'.'.join(map(str, MIN_COMPOSE_VERSION))} or newer is "
            "needed for `up --wait`. Upgrade the docker compose plugin"
        )
    return match.group(0)


class Stack:
    """One compose project of a system: generated file, up, health, endpoints, down.

    Use it as a context manager; `keep=True` leaves the stack running on exit (for debugging).
    """

    def __init__(
        self,
        system: SystemSpec,
        *,
        project: str | None = None,
        compose_dir: Path | None = None,
        health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        expected_images: Mapping[str, str] | None = None,
        keep: bool = False,
        report: Reporter = print,
        is_port_free: Callable[[int], bool] | None = None,
        port_base: int | None = None,
        reuse: bool | None = None,
        workers: Sequence[str] = (),
    ) -> None:
        self.system = system
        self.project = project or project_name(system)
        self.compose_dir = compose_dir or default_compose_dir(system)
        self.compose_file = self.compose_dir / f"{self.project}.yml"
        self.health_timeout = health_timeout
        self.expected_images = dict(expected_images or {})
        self.keep = keep
        self.report = report
        self.is_port_free = is_port_free
        self.port_base = default_port_base() if port_base is None else port_base
        self.ports: PortPlan | None = None
        # A shared stack for pytest-xdist: the serial stack for the first worker, and for each later one a
        # copy of every service with its own database and broker virtual host (compose.render_compose).
        self.workers = tuple(workers)
        self.endpoints: StackEndpoints | None = None  # the first worker's, in a shared stack
        self.worker_endpoints: dict[str, StackEndpoints] = {}
        # compose service of a service container -> its service in services.yml (`links-gw1` -> `links`)
        self.service_of = {
            for_worker(spec.name, copy_suffix(self.workers, worker)): spec.name
            for worker in self.workers or (None,)
            for spec in system.services
        }
        self.timings: dict[str, float] = {}
        self.answered: dict[str, float] = {}  # service -> when (time.time()) its health URL first answered
        # Reuse mode (None: $INTEGRATION_REUSE decides); see the module's docstring.
        self.reuse = reuse_from_env() if reuse is None else reuse
        self.state_file = self.compose_dir / STATE_FOLDER / f"{self.project}.json"
        # What the last `up` did: "created", "reused", or "recreated <services>".
        self.outcome = ""
        self.client = DockerClient(compose_files=[self.compose_file], compose_project_name=self.project)
        self.reaper: Reaper | None = None
        # When the whole start must be done (set by `up`): no wait of a start outlasts --health-timeout.
        self._deadline: float | None = None

    @classmethod
    def open(
        cls,
        system: SystemSpec,
        run: RunSettings,
        *,
        report: Reporter = print,
        expected_images: Mapping[str, str] | None = None,
        workers: Sequence[str] = (),
        worker: str | None = None,
        port_offset: int = 0,
        project: str | None = None,
    ) -> Stack:
        """The stack of one command or test session, every setting from `run` (integration.settings):
        the one way the command line and the pytest plugin make a stack. `worker` gives an xdist
        worker a whole stack of its own (per-worker mode), `port_offset` moves its port block."""
        return cls(
            system,
            project=project or project_name(system, worker),
            health_timeout=run.health_timeout,
            expected_images=expected_images,
            keep=run.keep,
            report=report,
            port_base=run.port_base + port_offset,
            reuse=run.reuse,
            workers=workers,
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        # The reaper first: a run killed during `up` (its longest phase) leaves nothing either.
        self._start_reaper()
        try:
            self.up()
        except BaseException:
            self.down()
            self._release_reaper()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.keep:
                self.report(f"--keep: stack {self.project} left running; stop it with: {self.down_command()}")
                return
            if self.reuse and self.endpoints is not None:
                self.report(
                    f"reuse mode: stack {self.project} left running for the next run; "
                    f"stop it with: {self.down_command()}"
                )
                return
            self.down()
        finally:
            self._release_reaper()  # with keep or reuse the stack stays, as asked

    def _start_reaper(self) -> None:
        """A container on the engine that removes this project when this process dies (SIGKILL, a lost
        machine) without tearing it down: integration.reaper."""
        if self.reaper is not None or not reaper_enabled():
            return
        # 127.0.0.1, or an address of a remote engine's host; outside the `try`: a remote engine without
        # a bind address stops the run here, with the one message that says how to choose it.
        host = current_engine().reaper_host()
        try:
            self.reaper = start_reaper(
                self.project, client=self.client, labels={LABEL_SYSTEM: self.system.name}, host=host
            )
            self.timings["reaper"] = self.reaper.start_seconds
        except (EngineError, ValueError) as exc:  # a safety net: a run without one still runs
            self.report(
                f"warning: no reaper for {self.project} ({exc}); a killed run leaves its stack until the "
                "next run"
            )

    def _release_reaper(self) -> None:
        if self.reaper is not None:
            reaper, self.reaper = self.reaper, None
            reaper.release()

    def down_command(self) -> str:
        return f"docker compose -p {self.project} -f {self.compose_file} down -v -t 0"

    def write(self, keep_ports: Mapping[str, Mapping[int, int]] | None = None) -> Path:
        """Plan host ports (keeping `keep_ports` where the system still has them) and write the file."""
        self.ports = self._plan(keep_ports)
        return write_atomically(self.compose_file, self.compose_text())

    def compose_text(self) -> str:
        """The compose file for the current port plan, as `write` puts it on disk."""
        assert self.ports is not None, "plan the ports first (write)"
        return dump_compose(render_compose(self.system, self.ports, workers=self.workers))

    def _plan(self, keep: Mapping[str, Mapping[int, int]] | None) -> PortPlan:
        engine = current_engine()  # where the ports are published (EngineError: remote, no bind address)
        free_port = ephemeral_port
        if self.is_port_free is not None:
            is_free = self.is_port_free
        elif not engine.local:
            # Local probes say nothing about a remote engine's host: ask the engine what its containers
            # bound, and the host's address what else listens there (integration.ports).
            bound = published_ports(self.client)
            is_free = engine_port_check(bound, engine.host)
            free_port = unclaimed_port(bound)
        else:
            claimed = self._ports_claimed_by_created_containers()

            def is_free(port: int) -> bool:
                return port not in claimed and port_is_free(port)

        held = {port for mapping in (keep or {}).values() for port in mapping.values()}
        fresh = plan_ports(
            self.system,
            lambda p: p not in held and is_free(p),
            base=self.port_base,
            workers=self.workers,
            free_port=free_port,
            bind_address=engine.bind_address,
        )
        if not keep:
            return fresh
        # A running stack holds its own ports: keep them, and plan only what is new, around them.
        return PortPlan(
            ports={
                service: {c: keep.get(service, {}).get(c, h) for c, h in mapping.items()}
                for service, mapping in fresh.ports.items()
            },
            bind_address=fresh.bind_address,
        )

    def _ports_claimed_by_created_containers(self) -> set[int]:
        """Host ports that containers created but not started yet (another stack's `up` waiting for its
        databases and broker) will bind: free on the machine now, taken within seconds. Two checkouts
        starting at once would otherwise plan the same ports and fail each other's `up`."""
        try:
            created = self.client.container.list(all=True, filters=[("status", "created")])
        except DockerException:
            return set()
        claimed: set[int] = set()
        for container in created:
            try:
                bindings = container.host_config.port_bindings or {}
            except DockerException:
                continue  # removed meanwhile
            for entries in bindings.values():
                for entry in entries or []:
                    host_port = getattr(entry, "host_port", None)
                    if host_port:
                        claimed.add(int(host_port))
        return claimed

    def up(self) -> StackEndpoints:
        """Down whatever an earlier run left, then up, then wait for every service's health.

        In reuse mode, a recorded stack is reused or brought up to date instead (module docstring).
        """
        if self.reuse:
            state = self._read_state()
            if state is not None:
                return self._up_reusing(state)
        self._check_compose()
        started = time.monotonic()
        self._deadline = started + self.health_timeout
        # Down before planning: a killed earlier run's containers still hold this project's host ports.
        if self._has_leftovers():
            self.down()
        else:
            self._forget_state()
        self.timings["down_before"] = time.monotonic() - started
        self.write()
        started = time.monotonic()
        self._compose_up()
        self.timings["up"] = time.monotonic() - started
        endpoints = self._after_up(self.containers())
        self.outcome = "created"
        return endpoints

    def _after_up(self, infos: list[ContainerInfo]) -> StackEndpoints:
        """Check the images, set the endpoints (returned), save the state to reuse."""
        started = time.monotonic()
        self._verify_images(infos)
        # The start (integration.startup) saw every service answer from the host: no second wait.
        self.endpoints = endpoints = self._endpoints(infos)
        self.timings["health"] = time.monotonic() - started
        if self.reuse or self.keep:
            self._save_state(infos)
        return endpoints

    def _check_compose(self) -> None:
        # Once per process and engine: the answer does not change while a test session runs.
        key = id(type(self.client))
        if key not in _checked_compose:
            _checked_compose[key] = check_compose(self.client)

    def _has_leftovers(self) -> bool:
        """Whether the project has containers: one `docker ps` instead of a `compose down` on nothing."""
        try:
            return bool(
                self.client.container.list(all=True, filters=[("label", f"{PROJECT_LABEL}={self.project}")])
            )
        except DockerException:
            return True  # let `down` tell

    # -- reuse mode ------------------------------------------------------------------------------------

    def _read_state(self) -> ReuseState | None:
        try:
            return ReuseState.from_json(self.state_file.read_text())
        except OSError:
            return None

    def _save_state(self, infos: list[ContainerInfo]) -> None:
        assert self.ports is not None
        text = self.compose_file.read_text()
        state = ReuseState(
            compose_sha256=sha256(text),
            ports={k: dict(v) for k, v in self.ports.ports.items()},
            containers={i.service: i.container_id for i in infos},
        )
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            (self.state_file.parent / ".gitignore").write_text("*\n")
            write_atomically(self.state_file, state.to_json() + "\n")
        except OSError as exc:
            self.report(f"warning: cannot record the stack for reuse in {self.state_file}: {exc}")

    def _forget_state(self) -> None:
        self.state_file.unlink(missing_ok=True)

    def _inspect(self, container_ids: list[str]) -> list[ContainerInfo]:
        if not container_ids:
            return []
        try:
            return inspect_containers(self.client, container_ids)
        except DockerException:
            pass  # one of them is gone: look at what the project has instead
        try:
            return self.containers()
        except DockerException:
            return []

    def _base_image_ids(self, infos: list[ContainerInfo]) -> dict[str, str]:
        """The broker's and the databases' compose services -> the id their image's tag names now, in one
        engine call: a reused container made from an earlier build of a stand-in is not reused."""
        wanted = {
            info.service: (
                self.system.base_images.broker
                if info.service == BROKER_SERVICE
                else self.system.base_images.postgres
            )
            for info in infos
            if info.service not in self.service_of
        }
        tags = sorted(set(wanted.values()))
        if not tags:
            return {}
        # A tag that is gone has no id here: compose then recreates its containers, and says why.
        catalog = ImageCatalog(self.client, tags)
        ids = {tag: catalog.image_id(tag) for tag in tags}
        return {service: found for service, tag in wanted.items() if (found := ids[tag])}

    def _up_reusing(self, state: ReuseState) -> StackEndpoints:
        started = time.monotonic()
        self.ports = self._plan(state.ports)
        text = self.compose_text()
        try:
            on_disk: str | None = self.compose_file.read_text()
        except OSError:
            on_disk = None
        infos = self._inspect(list(state.containers.values()))
        blockers = reuse_blockers(
            state, text, on_disk, infos, self.expected_images, self.service_of, self._base_image_ids(infos)
        )
        if not blockers and on_disk == text:
            try:
                self.endpoints = self._endpoints(infos)
                self._wait_for_health(self.endpoints, timeout=min(5.0, self.health_timeout))
            except StackError as exc:
                blockers = {"(health)": str(exc).splitlines()[0]}
            else:
                self.timings["reuse_check"] = time.monotonic() - started
                self.outcome = "reused"
                return self.endpoints
        self._check_compose()
        if "(health)" in blockers:
            # The containers looked healthy and a service still did not answer: start over.
            self.report(f"reuse mode: not reusing stack {self.project}: {blockers['(health)']}")
            self.down()
            return self.up()
        changes = "; ".join(f"{name} ({why})" for name, why in sorted(blockers.items()))
        self.report(
            f"reuse mode: bringing stack {self.project} up to date; "
            + (f"recreating {changes}" if changes else "the compose file changed outside its services")
        )
        write_atomically(self.compose_file, text)
        # Whatever the project runs for a blocked service goes (killed, no graceful stop), whether the
        # state knew the container or not; `up` then creates exactly those and leaves the rest alone.
        doomed = [i.container_id for i in self.containers() if i.service in blockers]
        if doomed:
            try:
                self.client.container.remove(doomed, force=True, volumes=True)
            except DockerException as exc:
                output = (exc.stderr or str(exc)).strip()
                raise StackError(
                    self._failure_message("removing the changed containers failed", output)
                ) from exc
        self.timings["reuse_check"] = time.monotonic() - started
        started = time.monotonic()
        self._compose_up()
        self.timings["up"] = time.monotonic() - started
        endpoints = self._after_up(self.containers())
        self.outcome = "recreated " + ", ".join(sorted(blockers)) if blockers else "recreated"
        return endpoints

    def _compose_up(self, retries: int = 2) -> None:
        """Create and start every container in the order of what each needs (integration.startup); a
        planned host port that another process took meanwhile is planned again, twice at most."""
        for attempt in range(retries + 1):
            try:
                # Compose writes progress and errors alike to stderr: only the exit status tells.
                Startup(self).run()
                return
            except DockerException as exc:
                output = f"{exc.stderr or ''}\n{exc.stdout or ''}"
                crashed = port_taken(output) and self._exited()
                if attempt < retries and port_taken(output) and not crashed:
                    # Another process took a planned port between planning and binding: plan again
                    # (unless a container already crashed: another attempt would only crash again).
                    self.report("a planned host port was taken meanwhile; choosing other ports")
                    self.down()
                    # Two stacks that lost a port to each other both plan again: a random pause lets
                    # one create its containers first, and the other then plans around their ports.
                    time.sleep(random.uniform(0.2, 1.5))
                    self.write()
                    continue
                headline = "starting the stack failed"
                if port_taken(output) and not crashed:
                    bind = self.ports.bind_address if self.ports is not None else "127.0.0.1"
                    headline = port_race_headline(output, retries + 1, bind)
                raise StackError(self._failure_message(headline, output)) from exc

    def _exited(self) -> list[ContainerInfo]:
        """Containers of the project that started and stopped (a crash), not those that never started."""
        try:
            return [i for i in self.containers() if i.state in ("exited", "dead")]
        except DockerException:
            return []

    def down(self) -> None:
        """Remove this project's containers, networks and volumes, and nothing else."""
        self._forget_state()
        started = time.monotonic()
        try:
            self._remove_project()
        except DockerException:
            # Whatever the direct removal left (a container that went away meanwhile, a network still in
            # use for a moment), compose's own down removes.
            if not self.compose_file.exists():
                self.write()
            try:
                # Test containers are disposable: no graceful-stop wait.
                self.client.compose.down(volumes=True, remove_orphans=True, timeout=0, quiet=True)
            except DockerException as exc:
                output = (exc.stderr or str(exc)).strip()[-300:]
                self.report(f"warning: down of {self.project} failed: {output}")
        self.timings["down"] = time.monotonic() - started

    def _remove_project(self) -> None:
        """The project's containers (killed, with their anonymous volumes) and networks, found by the
        compose project label: three engine calls instead of compose's down, which parses the file and
        stops and removes each container in turn. The generated file declares no named volume (the
        databases are on tmpfs), so there is none to remove."""
        label = f"{PROJECT_LABEL}={self.project}"
        containers = self.client.container.list(all=True, filters=[("label", label)])
        if containers:
            self.client.container.remove(containers, force=True, volumes=True)
        networks: list[str] = [n.id for n in self.client.network.list(filters=[("label", label)])]
        if networks:
            self.client.network.remove(list(networks))

    # -- inspection ------------------------------------------------------------------------------------

    def containers(self) -> list[ContainerInfo]:
        return project_containers(self.client, self.project)

    def _failure_message(self, headline: str, output: str = "") -> str:
        parts = [f"{headline} (project {self.project}, compose file {self.compose_file})"]
        try:
            infos = self.containers()
        except DockerException:
            infos = []
        dead = [i for i in infos if i.state in ("exited", "dead") or i.health == "unhealthy"]
        for info in dead:
            status = f"exited with code {info.exit_code}" if info.state != "running" else "unhealthy"
            tail = self.logs_tail(info.name)
            parts.append(f"container {info.name} ({info.service}) {status}; its last log lines:\n{tail}")
        if not dead and output.strip():
            parts.append("\n".join(output.strip().splitlines()[-20:]))
        artifacts = self.save_artifacts(headline)
        if artifacts:
            parts.append(f"run folder with every container's logs: {artifacts}")
        return "\n".join(parts)

    def _verify_images(self, infos: list[ContainerInfo]) -> None:
        """Each service container must run the image id that was verified fresh before `up`."""
        verify_service_images(self, infos)

    def _endpoints(self, infos: list[ContainerInfo]) -> StackEndpoints:
        """Every worker's endpoints (`worker_endpoints`); returns the first (the only one without
        workers)."""
        self.worker_endpoints = {worker: self._endpoints_of(infos, worker) for worker in self.workers}
        return self.worker_endpoints[self.workers[0]] if self.workers else self._endpoints_of(infos, None)

    def _endpoints_of(self, infos: list[ContainerInfo], worker: str | None) -> StackEndpoints:
        try:
            return endpoints_of(self.system, self.project, infos, self.workers, worker)
        except MissingEndpoint as exc:
            raise StackError(self._failure_message(str(exc))) from None

    def _database_url(self, by_service: Mapping[str, ContainerInfo], db_service: str, database: str) -> str:
        """The host-side URL of `database` in container `db_service`, through its published port."""
        try:
            return published_database_url(self.system.credentials, by_service, db_service, database)
        except MissingEndpoint as exc:
            raise StackError(self._failure_message(str(exc))) from None

    def _wait_for_health(self, endpoints: StackEndpoints, timeout: float | None = None) -> None:
        """Wait for every service of every worker's endpoints (of `endpoints` without workers)."""
        wait_for_services(self, endpoints, timeout)

    # -- artifacts -------------------------------------------------------------------------------------

    def logs_tail(self, container: str, lines: int = LOG_TAIL_LINES) -> str:
        return logs_tail(self.client, container, lines)

    def save_artifacts(self, reason: str) -> Path | None:
        """A run folder for CI to keep: each container's logs, the compose file, ps output, image hashes."""
        try:
            infos = self.containers()
        except DockerException:
            infos = []
        return save_run_folder(
            self.client,
            self.system,
            self.compose_dir / "runs",
            self.project,
            self.compose_file,
            reason,
            infos,
        )
