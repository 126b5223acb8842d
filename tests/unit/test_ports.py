"""The host port plan: defaults, fallbacks when ports are taken, and the port owner lookup."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest
from specs import service

from integration.errors import StackError
from integration.model import ServiceSpec, SystemSpec
from integration.ports import (
    DEFAULT_BASE,
    describe_port_owner,
    ephemeral_port,
    plan_ports,
    port_is_free,
)


def system(*services: ServiceSpec) -> SystemSpec:
    return SystemSpec(name="shop", root=Path("/repo"), services=tuple(services))


SHOP = system(
    service("orders", 8000, "orders", published=["OrderPlaced"]),
    service("billing", 8000, "billing", consumed=["OrderPlaced"]),
    service("web", 3000),
)


def all_ports(plan) -> list[int]:
    return [host for by_container in plan.ports.values() for host in by_container.values()]


def always_free(port: int) -> bool:
    return True


def test_default_block():
    plan = plan_ports(SHOP, is_free=always_free)

    assert plan.ports == {
        "orders": {8000: 47100},
        "orders-db": {5432: 47101},
        "billing": {8000: 47110},
        "billing-db": {5432: 47111},
        "web": {3000: 47120},
        "broker": {15672: 48000, 5672: 48001},
    }
    assert plan.host_port("broker", 5672) == DEFAULT_BASE + 901


def test_no_broker_ports_without_a_routed_event():
    plan = plan_ports(
        system(service("orders", 8000, published=["OrderPlaced"]), service("web", 3000)), always_free
    )

    assert set(plan.ports) == {"orders", "web"}


def test_another_base_moves_the_whole_block():
    plan = plan_ports(SHOP, is_free=always_free, base=20000)

    assert plan.host_port("orders", 8000) == 20000
    assert plan.host_port("billing-db", 5432) == 20011
    assert plan.host_port("broker", 15672) == 20900


@pytest.mark.parametrize("base", [0, 1023, 65535 - 900, 70000])
def test_a_base_that_cannot_hold_the_block_is_refused(base):
    with pytest.raises(ValueError, match="port base"):
        plan_ports(SHOP, is_free=always_free, base=base)


def test_taken_ports_fall_back_and_the_rest_keep_their_defaults():
    taken = {47100, 47111, 48001}
    fallbacks = iter([47110, 48000, 51000, 51001, 51002])  # two of them are other entries' defaults

    plan = plan_ports(SHOP, is_free=lambda p: p not in taken, free_port=lambda: next(fallbacks))

    assert plan.host_port("orders", 8000) == 51000
    assert plan.host_port("billing-db", 5432) == 51001
    assert plan.host_port("broker", 5672) == 51002
    assert plan.host_port("orders-db", 5432) == 47101
    assert plan.host_port("billing", 8000) == 47110
    assert plan.host_port("broker", 15672) == 48000
    assert not taken & set(all_ports(plan))


def test_fallback_never_repeats_a_port():
    handed_out = itertools.chain([50000, 50000, 50000, 50001, 50001], itertools.count(50002))

    plan = plan_ports(SHOP, is_free=lambda p: False, free_port=lambda: next(handed_out))

    ports = all_ports(plan)
    assert len(ports) == len(set(ports)) == 7
    assert ports[:2] == [50000, 50001]


def test_fallback_with_real_ephemeral_ports_is_unique_and_off_the_block():
    plan = plan_ports(SHOP, is_free=lambda p: False)

    ports = all_ports(plan)
    defaults = set(all_ports(plan_ports(SHOP, is_free=always_free)))
    assert len(ports) == len(set(ports)) == 7
    assert not defaults & set(ports)


def test_fallback_gives_up_with_a_clear_error():
    with pytest.raises(StackError, match=r"orders:8000"):
        plan_ports(SHOP, is_free=lambda p: False, free_port=lambda: 47100)


def test_many_services_overlapping_the_broker_slots_stay_unique():
    many = system(
        *(service(f"s{i}", 8000, f"db{i}") for i in range(95)),
        service("pub", 8000, published=["E"]),
        service("sub", 8000, consumed=["E"]),
    )

    plan = plan_ports(many, is_free=always_free, free_port=iter(range(52000, 53000)).__next__)

    ports = all_ports(plan)
    assert len(ports) == len(set(ports)) == 95 * 2 + 2 + 2
    assert all(1024 <= p <= 65535 for p in ports)


def test_a_real_listener_on_a_default_port_is_avoided():
    with socket.socket() as listener:
        try:
            listener.bind(("127.0.0.1", DEFAULT_BASE))
            listener.listen()
        except OSError:
            pass  # someone else holds it already: the plan must avoid it all the same
        assert not port_is_free(DEFAULT_BASE)

        plan = plan_ports(SHOP)

    ports = all_ports(plan)
    assert plan.host_port("orders", 8000) != DEFAULT_BASE
    assert DEFAULT_BASE not in ports
    assert len(ports) == len(set(ports))


def test_port_is_free_sees_listeners_on_any_address():
    with socket.socket() as on_loopback:
        on_loopback.bind(("127.0.0.1", 0))
        on_loopback.listen()
        assert not port_is_free(on_loopback.getsockname()[1])
    with socket.socket() as on_all:
        on_all.bind(("0.0.0.0", 0))
        on_all.listen()
        assert not port_is_free(on_all.getsockname()[1])


def test_port_is_free_for_a_released_port():
    port = ephemeral_port()

    assert port_is_free(port)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_is_free_rejects_impossible_ports(port):
    with pytest.raises(ValueError, match="out of range"):
        port_is_free(port)


# --- describe_port_owner ------------------------------------------------------------------------------

TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
)


def tcp_line(port: int, state: str, uid: int, inode: int) -> str:
    return (
        f"   0: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 "
        f"{uid:5d}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def fake_proc(tmp_path: Path, lines: list[str], fds: dict[int, list[str]]) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(TCP_HEADER + "".join(lines))
    (proc / "net" / "tcp6").write_text(TCP_HEADER)
    for pid, targets in fds.items():
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text("docker-proxy\n")
        (proc / str(pid) / "cmdline").write_bytes(b"/usr/bin/docker-proxy\0-host-port\x0047100\0")
        for fd, target in enumerate(targets):
            os.symlink(target, proc / str(pid) / "fd" / str(fd))
    return proc


def test_owner_is_the_process_holding_the_listening_socket(tmp_path):
    proc = fake_proc(
        tmp_path,
        [tcp_line(47100, "01", 0, 111), tcp_line(47100, "0A", 0, 222)],
        {7: ["/dev/null", "socket:[111]"], 812: ["socket:[222]"]},
    )

    assert (
        describe_port_owner(47100, proc) == "docker-proxy (pid 812): /usr/bin/docker-proxy -host-port 47100"
    )


def test_owner_not_visible_names_the_user(tmp_path):
    proc = fake_proc(tmp_path, [tcp_line(47100, "0A", 0, 222)], {})

    assert describe_port_owner(47100, proc) == "a process of user root (not visible to this user)"


def test_owner_unknown_when_nothing_listens(tmp_path):
    proc = fake_proc(tmp_path, [tcp_line(47101, "0A", 0, 222), tcp_line(47100, "01", 0, 333)], {})

    assert describe_port_owner(47100, proc) is None
    assert describe_port_owner(47100, tmp_path / "no-proc") is None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_owner_of_a_real_listener_is_this_process():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        owner = describe_port_owner(port)

    assert owner is not None
    assert f"(pid {os.getpid()})" in owner


# --- a remote engine: what it has bound, what answers on its host ------------------------------------


def test_a_remote_plan_skips_what_the_engine_bound_and_what_answers_on_its_host():
    from integration.ports import engine_port_check

    asked: list[tuple[str, int]] = []

    def answers(host: str, port: int) -> bool:
        asked.append((host, port))
        return port == DEFAULT_BASE + 10  # another process listens there on the engine's host

    is_free = engine_port_check({DEFAULT_BASE}, "10.213.0.2", answers)
    assert not is_free(DEFAULT_BASE) and not is_free(DEFAULT_BASE + 10) and is_free(DEFAULT_BASE + 20)
    assert ("10.213.0.2", DEFAULT_BASE + 20) in asked
    assert ("10.213.0.2", DEFAULT_BASE) not in asked  # bound by a container: no connect needed


def test_remote_fallbacks_come_from_the_ephemeral_range_outside_what_the_engine_bound():
    import random

    from integration.ports import EPHEMERAL, engine_port_check, unclaimed_port

    claimed = {DEFAULT_BASE, DEFAULT_BASE + 1, DEFAULT_BASE + 10}
    plan = plan_ports(
        SHOP,
        engine_port_check(claimed, "10.213.0.2", lambda _h, _p: False),
        free_port=unclaimed_port(claimed, random.Random(7)),
        bind_address="10.213.0.2",
    )
    ports = all_ports(plan)
    assert plan.bind_address == "10.213.0.2"
    assert len(ports) == len(set(ports)) and not claimed & set(ports)
    moved = [p for p in ports if not DEFAULT_BASE <= p <= DEFAULT_BASE + 901]
    assert len(moved) == 3 and all(EPHEMERAL[0] <= p <= EPHEMERAL[1] for p in moved)


def test_unclaimed_port_gives_up_when_everything_it_tries_is_bound():
    import random

    from integration.ports import unclaimed_port

    class Same(random.Random):
        def randint(self, a: int, b: int) -> int:
            return 40000

    with pytest.raises(StackError, match="is bound on the engine's host"):
        unclaimed_port({40000}, Same())()


def test_port_answers_sees_a_listener_and_not_a_closed_port():
    from integration.ports import port_answers

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_answers("127.0.0.1", port)
    assert not port_answers("127.0.0.1", port)
