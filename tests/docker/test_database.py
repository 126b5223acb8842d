"""integration.database against a real PostgreSQL: delete order, DELETE resets under locks, event tables."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool, QueuePool
from waiting import GENEROUS, Timer, poll_until

from integration.database import (
    APPLICATION_NAME,
    DatabaseError,
    HeldConnection,
    count_processed,
    make_engine,
    processed_ids,
    read_event_tables,
    read_outbox,
    reset_database,
    table_delete_order,
)

pytestmark = pytest.mark.docker

CHAIN_DDL = """
CREATE TABLE alembic_version (version_num text PRIMARY KEY);
CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY);
CREATE TABLE customers (id int PRIMARY KEY);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id));
CREATE TABLE order_lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders(id));
CREATE TABLE employees (id int PRIMARY KEY, manager_id int REFERENCES employees(id));
CREATE TABLE notes (id int PRIMARY KEY, body text);
"""
MIGRATION_ROWS = """
INSERT INTO alembic_version VALUES ('0042');
INSERT INTO flyway_schema_history VALUES (1);
"""
USER_ROWS = """
INSERT INTO customers VALUES (1), (2);
INSERT INTO orders VALUES (10, 1), (11, 2);
INSERT INTO order_lines VALUES (100, 10), (101, 11);
INSERT INTO employees VALUES (1, NULL), (2, 1), (3, 2);
INSERT INTO notes VALUES (1, 'x');
"""
CHAIN_DATA = MIGRATION_ROWS + USER_ROWS
EVENT_DDL = """
CREATE TABLE outbox_events (event_id text PRIMARY KEY, event_type text NOT NULL, payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL, published_at timestamptz);
CREATE TABLE processed_events (event_id text PRIMARY KEY, event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now());
"""


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """A fresh database per test on the module's server."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def pg_engine(pg_url) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_other(pg_url) -> Iterator[Connection]:
    """A second session, as a service would hold one; closed after the test."""
    engine = create_engine(pg_url, poolclass=NullPool, connect_args={"application_name": "itest-service"})
    connection = engine.connect()
    yield connection
    connection.close()
    engine.dispose()


def run(engine: Engine, sql: str) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(sql)


def scalar(engine: Engine, sql: str):
    with engine.connect() as connection:
        return connection.exec_driver_sql(sql).scalar()


def row_counts(engine: Engine, tables: list[str]) -> dict[str, int]:
    return {t: scalar(engine, f'SELECT count(*) FROM "{t}"') for t in tables}


# --- delete order ----------------------------------------------------------------------------------------


def test_delete_order_puts_children_first_and_skips_migration_tables(pg_engine):
    run(pg_engine, CHAIN_DDL)
    order = table_delete_order(pg_engine)
    assert sorted(order) == ["customers", "employees", "notes", "order_lines", "orders"]
    assert order.index("order_lines") < order.index("orders") < order.index("customers")


def test_reset_empties_a_chain_and_a_self_reference_and_keeps_migration_tables(pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    stats = reset_database(pg_engine)
    assert row_counts(
        pg_engine, ["customers", "orders", "order_lines", "employees", "notes"]
    ) == dict.fromkeys(["customers", "orders", "order_lines", "employees", "notes"], 0)
    assert scalar(pg_engine, "SELECT version_num FROM alembic_version") == "0042"
    assert scalar(pg_engine, "SELECT count(*) FROM flyway_schema_history") == 1
    assert stats.attempts == 1
    assert "alembic_version" not in stats.tables


def test_exclude_is_configurable(pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    reset_database(pg_engine, exclude={"notes"})
    assert scalar(pg_engine, "SELECT count(*) FROM notes") == 1
    assert scalar(pg_engine, "SELECT count(*) FROM alembic_version") == 0  # no longer excluded


def test_a_cycle_of_deferrable_keys_is_emptied_in_one_transaction(pg_engine):
    run(
        pg_engine,
        """
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a(id) DEFERRABLE);
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b(id) DEFERRABLE INITIALLY IMMEDIATE;
        BEGIN;
        SET CONSTRAINTS ALL DEFERRED;
        INSERT INTO a VALUES (1, 1);
        INSERT INTO b VALUES (1, 1);
        COMMIT;
        """,
    )
    assert sorted(table_delete_order(pg_engine)) == ["a", "b"]
    reset_database(pg_engine)
    assert row_counts(pg_engine, ["a", "b"]) == {"a": 0, "b": 0}


def test_a_cycle_broken_by_on_delete_cascade_is_emptied(pg_engine):
    run(
        pg_engine,
        """
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a(id) ON DELETE CASCADE);
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b(id);
        INSERT INTO a VALUES (1, NULL);
        INSERT INTO b VALUES (1, 1);
        UPDATE a SET b_id = 1;
        """,
    )
    # b references a with CASCADE, so a may go first; a references b without, so a must go before b.
    assert table_delete_order(pg_engine) == ["a", "b"]
    reset_database(pg_engine)
    assert row_counts(pg_engine, ["a", "b"]) == {"a": 0, "b": 0}


def test_a_cycle_of_immediate_keys_is_a_clear_error(pg_engine):
    run(
        pg_engine,
        """
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int CONSTRAINT b_a_fk REFERENCES a(id));
        ALTER TABLE a ADD CONSTRAINT a_b_fk FOREIGN KEY (b_id) REFERENCES b(id);
        """,
    )
    with pytest.raises(DatabaseError) as caught:
        table_delete_order(pg_engine)
    message = str(caught.value)
    assert "a, b" in message and "a_b_fk" in message and "b_a_fk" in message and "DEFERRABLE" in message


# --- reset: caching, schema changes ----------------------------------------------------------------------


def test_the_order_is_cached_and_renewed_when_the_schema_changes(pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    first = reset_database(pg_engine)
    second = reset_database(pg_engine)
    assert (first.order_from_cache, second.order_from_cache) == (False, True)
    assert first.tables == second.tables

    # A service creates a table after the first reset: the next reset notices and empties it too.
    run(pg_engine, "CREATE TABLE late (id int PRIMARY KEY, customer_id int REFERENCES customers(id));")
    run(pg_engine, "INSERT INTO customers VALUES (7); INSERT INTO late VALUES (1, 7);")
    third = reset_database(pg_engine)
    assert third.order_from_cache is False
    assert third.tables.index("late") < third.tables.index("customers")
    assert row_counts(pg_engine, ["late", "customers"]) == {"late": 0, "customers": 0}
    assert reset_database(pg_engine).order_from_cache is True

    # A table of the cached order is dropped: the reset reads the schema again instead of failing.
    run(pg_engine, "DROP TABLE late")
    assert "late" not in reset_database(pg_engine).tables


def test_an_explicit_order_is_used_as_given(pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    stats = reset_database(pg_engine, order=["order_lines", "orders"])
    assert stats.tables == ("order_lines", "orders")
    assert row_counts(pg_engine, ["order_lines", "orders", "customers"]) == {
        "order_lines": 0,
        "orders": 0,
        "customers": 2,
    }


# --- reset: locks ----------------------------------------------------------------------------------------


@contextmanager
def observer_of(url: str) -> Iterator[Engine]:
    engine = create_engine(url, poolclass=NullPool, connect_args={"application_name": "itest-observer"})
    try:
        yield engine
    finally:
        engine.dispose()


def resets_waiting_for_a_lock(observer: Engine) -> set[tuple[int, datetime]]:
    """(backend pid, transaction start) of each reset transaction now waiting for a lock."""
    with observer.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT pid, xact_start FROM pg_stat_activity WHERE datname = current_database() "
            f"AND application_name = '{APPLICATION_NAME}' AND wait_event_type = 'Lock'"
        ).all()
    return {(pid, started) for pid, started in rows}


def test_reset_waits_for_a_row_lock_of_an_idle_transaction(pg_url, pg_engine, pg_other):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    # A service's transaction locked a row and went idle (idle in transaction), then commits later:
    # once the reset is seen waiting for that lock.
    pg_other.exec_driver_sql("SELECT * FROM notes WHERE id = 1 FOR UPDATE").all()
    with observer_of(pg_url) as observer, ThreadPoolExecutor(1) as pool:
        try:
            reset = pool.submit(reset_database, pg_engine, lock_timeout=GENEROUS)
            poll_until(lambda: resets_waiting_for_a_lock(observer), "the reset waiting for the row lock")
            assert not reset.done()
        finally:
            pg_other.commit()
        stats = reset.result(timeout=GENEROUS)
    assert stats.attempts == 1  # it waited for the lock: no lock timeout, no second attempt
    assert scalar(pg_engine, "SELECT count(*) FROM notes") == 0


def test_reset_retries_after_a_lock_timeout(pg_url, pg_engine, pg_other):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    pg_other.exec_driver_sql("UPDATE customers SET id = id WHERE id = 1")
    # The lock is held until two attempts have been seen waiting for it: the first one timed out.
    seen: set[tuple[int, datetime]] = set()

    def two_attempts_seen() -> bool:
        seen.update(resets_waiting_for_a_lock(observer))
        return len(seen) >= 2

    with observer_of(pg_url) as observer, ThreadPoolExecutor(1) as pool:
        try:
            reset = pool.submit(reset_database, pg_engine, lock_timeout=0.2, attempts=1000)
            poll_until(two_attempts_seen, "a second attempt of the reset waiting for the lock", interval=0.02)
        finally:
            pg_other.commit()
        stats = reset.result(timeout=GENEROUS)
    assert stats.attempts > 1
    assert scalar(pg_engine, "SELECT count(*) FROM customers") == 0


def test_reset_gives_up_naming_the_lock_holder_without_the_password(pg_engine, pg_other):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    reset_database(pg_engine, lock_timeout=GENEROUS)  # caches the order, made with a long lock_timeout
    run(pg_engine, USER_ROWS)
    pg_other.exec_driver_sql("SELECT * FROM notes FOR UPDATE").all()
    with Timer() as timer, pytest.raises(DatabaseError) as caught:
        reset_database(pg_engine, lock_timeout=0.1, attempts=2)
    # This call's lock_timeout, not the cached order's: two attempts of at least 0.1 s each, and far
    # from the 2 x GENEROUS seconds that the cached order's lock_timeout would have taken.
    assert 2 * 0.1 <= timer.seconds < GENEROUS
    message = str(caught.value)
    assert "attempt 2 of 2" in message and "lock timeout" in message
    assert "idle in transaction" in message and "itest-service" in message
    assert "postgres:***@" in message and ":postgres@" not in message
    pg_other.rollback()
    # Nothing was deleted: the failed attempts rolled back as a whole.
    assert scalar(pg_engine, "SELECT count(*) FROM customers") == 2


def test_a_reader_in_an_open_transaction_blocks_truncate_but_not_the_reset(pg_engine, pg_other):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    # The service read the table in a transaction that is still open: it holds ACCESS SHARE.
    pg_other.exec_driver_sql("SELECT count(*) FROM orders").all()

    # One attempt with a short lock_timeout: had the reset waited for the reader's lock at all, it would
    # have failed (the reader never lets go during the reset).
    stats = reset_database(pg_engine, lock_timeout=0.5, attempts=1)
    assert stats.attempts == 1
    assert scalar(pg_engine, "SELECT count(*) FROM orders") == 0

    # TRUNCATE needs ACCESS EXCLUSIVE and waits behind the reader: without lock_timeout it would hang.
    with pytest.raises(OperationalError) as caught, pg_engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
        connection.exec_driver_sql("TRUNCATE order_lines, orders, customers")
    assert caught.value.orig.pgcode == "55P03"  # lock_not_available
    pg_other.rollback()


# --- engines ---------------------------------------------------------------------------------------------


def harness_sessions(observer: Engine) -> int:
    return scalar(
        observer,
        "SELECT count(*) FROM pg_stat_activity "
        f"WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'",
    )


def settle(observer: Engine, expected: int, timeout: float = GENEROUS) -> int:
    """Backends end a moment after their client hangs up; wait for the count to reach `expected`."""
    deadline = time.monotonic() + timeout
    while (count := harness_sessions(observer)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def test_nullpool_leaves_no_connection_open(pg_url, pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA + EVENT_DDL)
    observer = create_engine(pg_url, poolclass=NullPool, connect_args={"application_name": "itest-observer"})
    try:
        assert isinstance(pg_engine.pool, NullPool)
        for _ in range(3):
            reset_database(pg_engine)
            read_outbox(pg_engine)
            count_processed(pg_engine)
        assert settle(observer, 0) == 0
        pg_engine.dispose()
        assert settle(observer, 0) == 0

        # What a pooled engine would do: keep the connection after the test is done with it.
        pooled = create_engine(
            pg_url, poolclass=QueuePool, connect_args={"application_name": APPLICATION_NAME}
        )
        with pooled.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        assert settle(observer, 1) == 1
        pooled.dispose()
        assert settle(observer, 0) == 0
    finally:
        observer.dispose()


def test_an_unreachable_database_is_named_without_the_password(pg_server):
    engine = make_engine(f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{pg_server.port}/no_such_db")
    try:
        with pytest.raises(DatabaseError) as caught:
            reset_database(engine)
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "postgres:***@127.0.0.1" in message and "no_such_db" in message and "s3cret" not in message


# --- event tables ----------------------------------------------------------------------------------------


def test_missing_event_tables_read_as_empty(pg_engine):
    assert read_outbox(pg_engine) == []
    assert count_processed(pg_engine) == 0
    assert processed_ids(pg_engine) == set()
    tables = read_event_tables(pg_engine)
    assert tables.outbox is None and tables.processed is None


def test_outbox_rows_are_ordered_and_parsed(pg_engine):
    run(pg_engine, EVENT_DDL)
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    rows = [
        ("e3", "LinkVisited", {"code": "abc"}, t0 + timedelta(seconds=2), None),
        ("e2", "LinkCreated", {"code": "abc", "n": 1}, t0, t0 + timedelta(seconds=5)),
        ("e1", "LinkCreated", {"code": "xyz"}, t0, None),
    ]
    with pg_engine.begin() as connection:
        for event_id, event_type, payload, occurred, published in rows:
            connection.exec_driver_sql(
                "INSERT INTO outbox_events "
                "VALUES (%(id)s, %(type)s, %(payload)s, %(occurred)s, %(published)s)",
                {
                    "id": event_id,
                    "type": event_type,
                    "payload": json.dumps(payload),
                    "occurred": occurred,
                    "published": published,
                },
            )
        connection.exec_driver_sql("INSERT INTO processed_events (event_id, event_type) VALUES ('e1', 'X')")
    outbox = read_outbox(pg_engine)
    assert [r.event_id for r in outbox] == ["e1", "e2", "e3"]  # occurred_at, then event_id
    assert outbox[1].payload == {"code": "abc", "n": 1}
    assert outbox[1].published_at == t0 + timedelta(seconds=5) and outbox[0].published_at is None
    assert count_processed(pg_engine) == 1 and processed_ids(pg_engine) == {"e1"}
    tables = read_event_tables(pg_engine)
    assert tables.outbox == tuple(outbox) and tables.processed == frozenset({"e1"})


def test_outbox_with_text_payload_and_naive_timestamps(pg_engine):
    run(
        pg_engine,
        """
        CREATE TABLE outbox_events (event_id uuid PRIMARY KEY, event_type text, payload text,
            occurred_at timestamp, published_at timestamp);
        INSERT INTO outbox_events VALUES ('6f1c2d4e-0000-4000-8000-000000000001', 'LinkDeleted',
            '{"code": "q"}', '2024-05-01 12:00', NULL);
        """,
    )
    (row,) = read_outbox(pg_engine)
    assert row.event_id == "6f1c2d4e-0000-4000-8000-000000000001"
    assert row.payload == {"code": "q"}
    assert row.occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_a_payload_that_is_not_an_object_is_an_error(pg_engine):
    run(
        pg_engine,
        EVENT_DDL + "INSERT INTO outbox_events VALUES ('e1', 'LinkCreated', '[1, 2]', now(), NULL);",
    )
    with pytest.raises(DatabaseError, match=r"e1 \(LinkCreated\) has a payload that is not a JSON object"):
        read_outbox(pg_engine)


# --- the reset's held session ----------------------------------------------------------------------------


def harness_session_states(observer: Engine) -> list[tuple[int, str, object]]:
    """(pid, state, transaction start) of each harness session of the database."""
    with observer.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT pid, state, xact_start FROM pg_stat_activity "
            f"WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'"
        ).all()
    return [tuple(row) for row in rows]


def test_a_held_connection_resets_in_one_session_that_holds_no_transaction(pg_url, pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    held = HeldConnection(pg_engine)
    try:
        for _ in range(3):
            reset_database(pg_engine, connection=held)
            assert row_counts(pg_engine, ["customers", "orders", "order_lines"]) == {
                "customers": 0,
                "orders": 0,
                "order_lines": 0,
            }
            run(pg_engine, USER_ROWS)
        assert held.opened == 1  # three resets, one session
        with observer_of(pg_url) as observer:
            sessions = poll_until(lambda: harness_session_states(observer), "the held session")
            # Idle outside any transaction: it holds no lock against the services between resets.
            assert [(state, started) for _, state, started in sessions] == [("idle", None)]
            # A service's migration takes ACCESS EXCLUSIVE: it is not kept waiting by the held session.
            with observer.connect() as connection:
                connection.exec_driver_sql("SET lock_timeout = '2s'")
                connection.exec_driver_sql("ALTER TABLE notes ADD COLUMN extra text")
                connection.commit()
            held.close()
            held.close()
            assert settle(observer, 0) == 0
    finally:
        held.close()


def test_a_held_session_the_server_ended_is_replaced_at_the_next_reset(pg_url, pg_engine):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    held = HeldConnection(pg_engine)
    try:
        reset_database(pg_engine, connection=held)
        with observer_of(pg_url) as observer:
            ((pid, _, _),) = poll_until(lambda: harness_session_states(observer), "the held session")
            with observer.connect() as connection:
                assert connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
        run(pg_engine, USER_ROWS)
        stats = reset_database(pg_engine, connection=held)
        assert stats.attempts == 1 and held.opened == 2
        assert scalar(pg_engine, "SELECT count(*) FROM customers") == 0
    finally:
        held.close()


def test_a_failed_reset_in_a_held_session_leaves_no_transaction_open(pg_url, pg_engine, pg_other):
    run(pg_engine, CHAIN_DDL + CHAIN_DATA)
    held = HeldConnection(pg_engine)
    try:
        reset_database(pg_engine, connection=held)
        run(pg_engine, USER_ROWS)
        pg_other.exec_driver_sql("SELECT * FROM notes FOR UPDATE").all()
        with pytest.raises(DatabaseError, match="attempt 2 of 2"):
            reset_database(pg_engine, lock_timeout=0.1, attempts=2, connection=held)
        # The batch stopped inside its transaction (rows of the tables before `notes` deleted, not
        # committed): the session went with it, so nothing of it holds a lock or stays half done.
        assert not held.is_open
        with observer_of(pg_url) as observer:
            poll_until(lambda: not harness_session_states(observer), "no harness session left")
        pg_other.rollback()
        assert scalar(pg_engine, "SELECT count(*) FROM customers") == 2
        stats = reset_database(pg_engine, connection=held)
        assert stats.attempts == 1 and scalar(pg_engine, "SELECT count(*) FROM customers") == 0
    finally:
        held.close()
