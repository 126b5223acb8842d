"""The message of a stack whose planned host ports kept being taken: it names the address the ports are
bound on (loopback for a local engine, the user's choice for a remote one), and looks up who holds the
port only where that lookup means something (this machine's sockets, for a local engine). Pure."""

from __future__ import annotations

import socket

from integration.diagnostics import port_race_headline


def test_a_local_port_names_loopback_and_its_holder():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        output = f"Bind for 127.0.0.1:{port} failed: port is already allocated"
        headline = port_race_headline(output, 3)
    assert headline.startswith(f"host port 127.0.0.1:{port} (now held by ")
    assert "3 times in a row" in headline
    assert "on this machine" in headline


def test_a_remote_engines_port_names_its_bind_address_and_no_local_holder():
    output = "Bind for 10.213.0.2:47101 failed: port is already allocated"
    headline = port_race_headline(output, 2, "10.213.0.2")
    assert headline.startswith("host port 10.213.0.2:47101 was taken")
    assert "held by" not in headline
    assert "the engine's host" in headline and "free ports on 10.213.0.2" in headline


def test_an_ipv6_bind_address_is_bracketed_and_an_unknown_port_said_so():
    headline = port_race_headline("Error: address already in use", 3, "fd00::2")
    assert headline.startswith("a host port was taken")
    assert "[fd00::2]" in headline
