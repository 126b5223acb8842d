"""The failure report's pure parts: engine timestamps, the test's window, log and event sections, the
option values; and the hooks end to end in a pytest run whose stack is faked (no Docker)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integration import failure_report as fr
from integration.model import EventSchema, ServiceEndpoint, StackEndpoints

T0 = datetime(2026, 12, 1, 20, 40, 20, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def engine_stamp(seconds: float) -> str:
    """How `docker logs --timestamps` stamps a line: nanoseconds, Z."""
    moment = at(seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}123Z"


# --- times and windows ------------------------------------------------------------------------------------


def test_engine_timestamps_are_read_in_utc() -> None:
    assert fr.parse_engine_time("2026-12-01T20:40:20.097075416Z") == datetime(
        2026, 12, 1, 20, 40, 20, 97075, tzinfo=UTC
    )
    assert fr.parse_engine_time("2026-12-01T21:40:20.5+01:00") == at(0.5)
    assert fr.parse_engine_time("2026-12-01T20:40:20Z") == T0
    assert fr.parse_engine_time("INFO:") is None
    assert fr.parse_engine_time("") is None


def test_naive_database_times_are_utc() -> None:
    assert fr.as_utc(datetime(2026, 12, 1, 20, 40, 20)) == T0
    assert fr.as_utc(T0.astimezone(fr.UTC)) == T0


def test_the_window_starts_at_the_setup_or_when_the_stack_became_healthy_during_it() -> None:
    assert fr.window_of_test(at(0), at(2)) == fr.Window(at(0), at(2))
    # The first test's setup started the stack: its start-up lines are not the test's.
    assert fr.window_of_test(at(0), at(12), stack_ready=at(10)) == fr.Window(at(10), at(12))
    # Later tests: the stack was ready long before.
    assert fr.window_of_test(at(30), at(31), stack_ready=at(10)) == fr.Window(at(30), at(31))
    window = fr.Window(at(1), at(2))
    assert at(1) in window and at(2) in window and at(1.5) in window
    assert at(0.999) not in window and at(2.001) not in window
    assert datetime(2026, 12, 1, 20, 40, 21) in window  # naive: UTC


# --- log lines --------------------------------------------------------------------------------------------


def log_text(*lines: tuple[float, str]) -> str:
    return "".join(f"{engine_stamp(seconds)} {text}\n" for seconds, text in lines)


def test_log_lines_are_put_in_time_order_whatever_stream_they_came_from() -> None:
    # python-on-whales joins stdout and stderr as they arrive: out of order.
    text = log_text((2.0, "second"), (1.0, "first"), (3.0, "third")) + "a line without a stamp\n\n"
    lines = fr.parse_log_lines(text)
    assert [line.text for line in lines] == ["first", "second", "third", "a line without a stamp"]
    assert lines[-1].at == lines[-2].at == at(3.0)
    assert fr.parse_log_lines("") == []


def test_the_log_section_holds_the_lines_of_the_window_only_the_last_n_with_the_container() -> None:
    lines = fr.parse_log_lines(
        log_text(
            (0.5, '"GET /links/earlier-test HTTP/1.1" 200 OK'),
            (1.2, '"POST /links HTTP/1.1" 201 Created'),
            (1.4, '"GET /failing-code HTTP/1.1" 307 Temporary Redirect'),
            (1.6, "links: something logged"),
            (2.5, "after the test"),
        )
    )
    title, content = fr.log_section("links", "shortener-1a2b-links-1", lines, fr.Window(at(1), at(2)), 2)
    assert title == "integration: links log, container shortener-1a2b-links-1"
    head, *body = content.splitlines()
    assert head == (
        "3 lines from 2026-12-01 20:40:21.000 to 20:40:22.000 UTC; "
        "the last 2 shown (integration_log_lines = 2)"
    )
    assert body == [
        '20:40:21.400000  "GET /failing-code HTTP/1.1" 307 Temporary Redirect',
        "20:40:21.600000  links: something logged",
    ]
    assert "earlier-test" not in content and "after the test" not in content

    _, everything = fr.log_section("links", "c", lines, fr.Window(at(1), at(2)), 50, worker="gw1")
    assert (
        everything.splitlines()[0] == "3 lines from 2026-12-01 20:40:21.000 to 20:40:22.000 UTC (worker gw1)"
    )
    assert len(everything.splitlines()) == 4

    _, counted = fr.log_section("links", "c", lines, fr.Window(at(1), at(2)), 0)
    assert counted.splitlines() == [
        "3 lines from 2026-12-01 20:40:21.000 to 20:40:22.000 UTC; "
        "the last 0 shown (integration_log_lines = 0)"
    ]
    _, empty = fr.log_section("links", "c", lines, fr.Window(at(10), at(11)), 50)
    assert empty == "0 lines from 2026-12-01 20:40:30.000 to 20:40:31.000 UTC"
    _, failed = fr.log_section("links", "c", [], fr.Window(at(1), at(2)), 50, problem="NoSuchContainer: c")
    assert failed == "logs of c unavailable: NoSuchContainer: c"


# --- event rows -------------------------------------------------------------------------------------------


def outbox(service: str, event_id: str, seconds: float, sent: float | None, code: str) -> fr.EventRow:
    return fr.EventRow(
        fr.PUBLISHED,
        service,
        event_id,
        "LinkCreated",
        at(seconds),
        None if sent is None else at(sent),
        {"code": code, "event_id": event_id},
    )


def processed(service: str, event_id: str, seconds: float | None) -> fr.EventRow:
    return fr.EventRow(
        fr.CONSUMED, service, event_id, "LinkCreated", None if seconds is None else at(seconds)
    )


WINDOW = fr.Window(at(10), at(20))


def test_the_test_s_events_are_those_of_its_window_in_time_order_across_services() -> None:
    links = fr.ServiceEvents(
        "links",
        published=(
            outbox("links", "e-old", 5.0, 5.1, "earlier"),  # an earlier test's: before the window
            outbox("links", "e2", 12.0, None, "second"),
            outbox("links", "e1", 11.0, 11.2, "first"),
        ),
    )
    analytics = fr.ServiceEvents(
        "analytics",
        consumed=(processed("analytics", "e-old", 5.3), processed("analytics", "e1", 11.5)),
        processed_table=True,
        time_column="processed_at",
    )
    rows = fr.events_of_test([links, analytics], WINDOW)
    assert [(row.kind, row.service, row.event_id) for row in rows] == [
        ("published", "links", "e1"),
        ("consumed", "analytics", "e1"),
        ("published", "links", "e2"),
    ]


def test_a_processed_table_without_a_time_column_gives_the_ids_of_the_test_s_outbox_rows() -> None:
    links = fr.ServiceEvents(
        "links",
        published=(outbox("links", "e1", 11.0, 11.2, "first"), outbox("links", "e2", 12.0, 12.1, "x")),
    )
    analytics = fr.ServiceEvents(
        "analytics",
        consumed=(processed("analytics", "e-old", None), processed("analytics", "e1", None)),
        processed_table=True,
    )
    rows = fr.events_of_test([analytics, links], WINDOW)
    assert [(row.kind, row.event_id) for row in rows] == [
        ("published", "e1"),
        ("consumed", "e1"),  # right after the row it consumed
        ("published", "e2"),
    ]


def test_the_events_section_shows_each_row_and_what_is_pending() -> None:
    links = fr.ServiceEvents(
        "links",
        published=(
            outbox("links", "e1", 11.0, 11.25, "first"),
            outbox("links", "e2", 12.0, None, "lost-one"),
            outbox("links", "e-old", 1.0, 1.1, "earlier-test"),
        ),
        processed_table=False,
    )
    analytics = fr.ServiceEvents(
        "analytics",
        consumed=(processed("analytics", "e1", 11.5),),
        processed_table=True,
        time_column="processed_at",
    )
    title, content = fr.events_section(
        [links, analytics], WINDOW, consumers={"analytics": ("LinkCreated",)}, worker="gw1"
    )
    assert title == "integration: events, worker gw1"
    lines = content.splitlines()
    assert lines[0] == "2 published, 1 consumed from 2026-12-01 20:40:30.000 to 20:40:40.000 UTC (worker gw1)"
    assert lines[1].split()[:5] == ["20:40:31.000000", "published", "links", "LinkCreated", "e1"]
    assert "sent 20:40:31.250000 (+250 ms)" in lines[1] and lines[1].endswith(
        '  {"code":"first"}'
    )  # id and time not twice
    assert lines[2].split()[:5] == ["20:40:31.500000", "consumed", "analytics", "LinkCreated", "e1"]
    assert "(+500 ms after it occurred in links)" in lines[2]
    assert "NOT SENT (published_at empty)" in lines[3] and "lost-one" in lines[3]
    assert lines[4:] == [
        "pending when read: LinkCreated e2 of links: not sent to the broker",
        "pending when read: LinkCreated e2 of links: not processed by analytics",
    ]
    assert "earlier-test" not in content and "e-old" not in content


def test_the_events_section_says_when_everything_went_through_or_nothing_moved() -> None:
    links = fr.ServiceEvents("links", published=(outbox("links", "e1", 11.0, 11.1, "ok"),))
    analytics = fr.ServiceEvents(
        "analytics", consumed=(processed("analytics", "e1", 11.2),), processed_table=True
    )
    _, content = fr.events_section([links, analytics], WINDOW, consumers={"analytics": ["LinkCreated"]})
    assert content.splitlines()[-1] == (
        "every event was sent and processed by each consumer whose table could be read"
    )
    title, nothing = fr.events_section([fr.ServiceEvents("links")], WINDOW, notes=["a note"])
    assert title == "integration: events"
    assert nothing.splitlines()[1:] == [
        "no outbox or processed rows were written while the test ran",
        "a note",
    ]
    _, broken = fr.events_section([fr.ServiceEvents("links", problem="cannot connect")], WINDOW)
    assert broken.splitlines()[-1] == "links: rows unavailable: cannot connect"
    # A consumer whose table could not be read is not said to have missed anything.
    _, unknown = fr.events_section([links], WINDOW, consumers={"analytics": ["LinkCreated"]})
    assert "not processed" not in unknown


def test_routing_keys_in_the_type_column_read_as_event_names() -> None:
    row = fr.EventRow(fr.PUBLISHED, "orders", "o1", "order.placed", at(11), at(11.1), {})
    _, content = fr.events_section(
        [fr.ServiceEvents("orders", published=(row,)), fr.ServiceEvents("inventory", processed_table=True)],
        WINDOW,
        consumers={"inventory": ["OrderPlaced"]},
        routing_keys={"OrderPlaced": "order.placed"},
    )
    assert "OrderPlaced" in content.splitlines()[1]
    assert (
        content.splitlines()[-1] == "pending when read: OrderPlaced o1 of orders: not processed by inventory"
    )


def test_the_processed_table_s_time_column() -> None:
    assert fr.pick_time_column([("event_id", False), ("processed_at", True)]) == "processed_at"
    assert fr.pick_time_column([("created_at", True), ("handled_at", True)]) == "handled_at"
    assert fr.pick_time_column([("event_id", False), ("stamp", True)]) == "stamp"
    assert fr.pick_time_column([("event_id", False), ("processed_at", False)]) is None
    assert fr.pick_time_column([]) is None


def test_junit_properties_are_named_by_section_without_the_container() -> None:
    sections = [("integration: links log, container c-links-1", "2 lines"), ("integration: events", "x")]
    assert fr.properties(sections) == [
        ("integration: links log", "container c-links-1\n2 lines"),
        ("integration: events", "x"),
    ]


def test_collect_sections_reads_this_worker_s_containers_and_databases() -> None:
    endpoints = StackEndpoints(
        project="p",
        services={
            "links": ServiceEndpoint(
                "links", "http://l", "postgresql://l/links_gw1", container="p-links-gw1-1"
            ),
            "analytics": ServiceEndpoint("analytics", "http://a", None, container="p-analytics-gw1-1"),
        },
        consumed={"analytics": ("LinkCreated",)},
        worker="gw1",
    )
    asked: list[str] = []

    def read_log(container: str, window: fr.Window) -> str:
        asked.append(container)
        return log_text((11.0, f"line of {container}"), (1.0, "too early"))

    def read_events(service: str, url: str, schema: EventSchema) -> fr.ServiceEvents:
        asked.append(url)
        return fr.ServiceEvents(service, published=(outbox(service, "e1", 11, 11.1, "mine"),))

    sections = fr.collect_sections(
        endpoints, WINDOW, 50, worker="gw1", read_log=read_log, read_events=read_events, now=lambda: at(20)
    )
    assert sorted(asked) == ["p-analytics-gw1-1", "p-links-gw1-1", "postgresql://l/links_gw1"]
    assert [title for title, _ in sections] == [
        "integration: links log, container p-links-gw1-1",
        "integration: analytics log, container p-analytics-gw1-1",
        "integration: events, worker gw1",
    ]
    assert "line of p-links-gw1-1" in sections[0][1] and "too early" not in sections[0][1]
    assert '"code":"mine"' in sections[2][1]

    def broken(container: str, window: fr.Window) -> str:
        raise RuntimeError("engine gone")

    sections = fr.collect_sections(
        endpoints,
        WINDOW,
        50,
        read_log=broken,
        read_events=read_events,
        now=lambda: at(20),
        after_teardown=True,
    )
    assert sections[0][1] == "logs of p-links-gw1-1 unavailable: RuntimeError: engine gone"
    assert sections[2][1].splitlines()[-1].startswith("read after the teardown")


# --- the option values ------------------------------------------------------------------------------------


def test_the_mode_option_values() -> None:
    assert fr.MODES == ("failed", "all", "off") and fr.DEFAULT_MODE == "failed"
    assert [fr.parse_mode(v) for v in ("failed", "ALL", " off ")] == ["failed", "all", "off"]
    with pytest.raises(ValueError, match="choose one of failed, all, off"):
        fr.parse_mode("some")


def test_the_lines_per_service_value() -> None:
    assert fr.DEFAULT_LOG_LINES == 50
    assert fr.parse_line_limit("50") == 50 and fr.parse_line_limit(" 0 ") == 0 and fr.parse_line_limit(7) == 7
    with pytest.raises(ValueError, match="not a whole number"):
        fr.parse_line_limit("many")
    with pytest.raises(ValueError, match="out of range"):
        fr.parse_line_limit("-1")


def test_which_reports_get_the_sections() -> None:
    assert fr.wanted("failed", "call", failed=True, skipped=False)
    assert not fr.wanted("failed", "call", failed=False, skipped=False)
    assert fr.wanted("failed", "setup", failed=True, skipped=False)
    assert fr.wanted("failed", "teardown", failed=True, skipped=False)
    assert not fr.wanted("failed", "setup", failed=False, skipped=False)
    assert fr.wanted("all", "call", failed=False, skipped=False)
    assert not fr.wanted("all", "teardown", failed=False, skipped=False)
    assert not fr.wanted("all", "call", failed=False, skipped=True)
    assert not fr.wanted("off", "call", failed=True, skipped=False)


# --- the hooks, in a pytest run with a faked stack ----------------------------------------------------------

CONFTEST = """
from datetime import UTC, datetime, timedelta

import pytest

import integration.failure_report as fr
from integration.model import ServiceEndpoint, StackEndpoints


def read_log(container, window):
    inside = window.start + timedelta(milliseconds=1)
    before = window.start - timedelta(seconds=5)
    def stamp(moment):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return (
        f"{stamp(before)} line of an earlier test\\n"
        f"{stamp(inside)} INFO: \\"POST /links HTTP/1.1\\" 201 Created <{container}>\\n"
    )


def read_events(service, url, schema):
    now = datetime.now(UTC)
    return fr.ServiceEvents(
        service,
        published=(
            fr.EventRow("published", service, "e-now", "LinkCreated", now, None, {"code": "this-test"}),
            fr.EventRow("published", service, "e-old", "LinkCreated", now - timedelta(minutes=5), now, {}),
        ),
    )


fr.read_container_log = read_log
fr.read_service_events = read_events


@pytest.fixture(scope="session")
def docker_compose_services():
    return StackEndpoints(
        project="fake",
        services={
            "links": ServiceEndpoint("links", "http://x", "postgresql://u@h/links", container="fake-links-1")
        },
    )
"""

TESTS = """
def test_passes(docker_compose_services):
    assert True


def test_fails(docker_compose_services):
    assert False, "on purpose"


def test_without_the_stack():
    assert False
"""


ERRORS = """
import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")


def test_setup_error(docker_compose_services, broken_setup):
    pass


def test_teardown_error(docker_compose_services, broken_teardown):
    pass
"""


def run_fake(
    tmp_path: Path, *options: str, tests: str = TESTS
) -> tuple[subprocess.CompletedProcess[str], ET.Element | None]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(tests))
    junit = tmp_path / "j.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "INTEGRATION_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "integration.failure_report",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "--rootdir",
            str(tmp_path),
            *options,
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, ET.parse(junit).getroot() if junit.exists() else None


def properties_of(root: ET.Element | None, test: str) -> dict[str, str]:
    assert root is not None, "no JUnit file"
    case = next(c for c in root.iter("testcase") if c.get("name") == test)
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def test_a_failed_test_gets_the_sections_in_the_terminal_and_the_junit_file(tmp_path: Path) -> None:
    result, root = run_fake(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "- integration: links log, container fake-links-1 -" in output
    assert '"POST /links HTTP/1.1" 201 Created <fake-links-1>' in output
    assert "line of an earlier test" not in output
    assert "- integration: events -" in output
    assert '"code":"this-test"' in output and "e-old" not in output
    assert output.count("integration: events") == 1  # neither the passing test nor the one without the stack

    props = properties_of(root, "test_fails")
    assert set(props) == {"integration: links log", "integration: events"}
    assert props["integration: links log"].startswith("container fake-links-1\n1 line from ")
    assert '"POST /links HTTP/1.1" 201' in props["integration: links log"]
    assert '"code":"this-test"' in props["integration: events"]
    assert properties_of(root, "test_passes") == {} and properties_of(root, "test_without_the_stack") == {}
    # The default junit_logging ("no") writes no <system-out>: the sections reach the file only as properties.
    assert root is not None and not list(root.iter("system-out"))


def test_errors_in_setup_and_teardown_get_the_sections_too(tmp_path: Path) -> None:
    result, root = run_fake(tmp_path, tests=ERRORS)
    output = result.stdout + result.stderr
    assert "1 passed, 2 errors" in output, output  # the teardown error's call passed
    setup = output[output.index("ERROR at setup of test_setup_error") :]
    assert "- integration: events -" in setup.split("ERROR at teardown")[0]
    teardown = output[output.index("ERROR at teardown of test_teardown_error") :]
    assert "- integration: links log, container fake-links-1 -" in teardown
    assert "read after the teardown, which resets the databases" in teardown
    assert "integration: events" in properties_of(root, "test_setup_error")
    assert "read after the teardown" in properties_of(root, "test_teardown_error")["integration: events"]


def test_report_sections_do_not_reach_system_out_even_with_junit_logging(tmp_path: Path) -> None:
    _, root = run_fake(tmp_path, "-o", "junit_logging=system-out")
    assert root is not None
    out = "".join(node.text or "" for node in root.iter("system-out"))
    assert "POST /links" not in out  # only pytest's "Captured stdout" sections go there
    assert "integration: links log" in properties_of(root, "test_fails")


def test_all_reports_every_test_and_off_none(tmp_path: Path) -> None:
    result, root = run_fake(tmp_path, "--integration-logs=all", "-o", "integration_log_lines=1")
    assert "integration: links log" in properties_of(root, "test_passes")
    assert "integration: links log" in properties_of(root, "test_fails")
    assert properties_of(root, "test_without_the_stack") == {}
    result, root = run_fake(tmp_path, "--integration-logs=off")
    assert "integration: " not in result.stdout
    assert properties_of(root, "test_fails") == {}


def test_wrong_option_values_stop_the_run(tmp_path: Path) -> None:
    result, _ = run_fake(tmp_path, "--integration-logs=sometimes")
    assert result.returncode == 4 and "invalid choice: 'sometimes'" in result.stderr
    result, _ = run_fake(tmp_path, "-o", "integration_log_lines=many")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "integration_log_lines = 'many' is not a whole number of lines" in result.stderr
