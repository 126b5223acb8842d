"""The harness's access to the services' PostgreSQL databases: engines, resets and the event tables.

The only module of the toolkit that talks to PostgreSQL; it does so through SQLAlchemy.

- Engines never pool (`NullPool`): a pooled connection would outlive the test that opened it, sit idle
  in the service's database and hold locks against the service.
- The one exception is the reset's own session (`HeldConnection`): connecting (a backend fork and the
  password exchange) is most of what a reset costs, so a harness keeps one session per database for its
  resets. It holds no lock between resets: it runs in autocommit, each reset is one batch that ends with
  COMMIT, and a batch that fails for any reason closes it (the server rolls back what it began). A
  session the server ended (a restart, pg_terminate_backend) is replaced once, at the next reset.
- A reset is `DELETE FROM` every table, children before parents, in one transaction and one round trip.
  Never `TRUNCATE`: it takes an ACCESS EXCLUSIVE lock, which waits behind any transaction of a service
  that so much as read the table, and everything that comes after it waits behind the TRUNCATE.
- The delete order is worked out once per database from the foreign keys and cached. The reset batch
  ends with a fingerprint of the schema; when it changed (a service created a table after the first
  reset), the order is worked out again and the reset repeated.
- The event tables of docs/conventions.md (`outbox_events`, `processed_events`) read as dataclasses;
  a table that does not exist yet (the service creates it when it starts) reads as empty.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from integration.errors import HarnessError
from integration.model import OutboxColumns

DEFAULT_SCHEMA = "public"
# Tables that record which migrations ran: a reset that emptied them would make the service migrate again.
DEFAULT_EXCLUDED_TABLES: frozenset[str] = frozenset(
    {"alembic_version", "flyway_schema_history", "schema_migrations", "django_migrations"}
)
DEFAULT_OUTBOX_TABLE = "outbox_events"
DEFAULT_PROCESSED_TABLE = "processed_events"

DEFAULT_CONNECT_TIMEOUT = 5  # seconds; libpq counts whole seconds, at least 2
DEFAULT_LOCK_TIMEOUT = 1.0  # seconds one attempt of a reset waits for a row lock a service holds
DEFAULT_RESET_ATTEMPTS = 5
APPLICATION_NAME = "integration-harness"  # how the harness's sessions show in pg_stat_activity

# SQLSTATEs after which a reset is tried again: lock_not_available (lock_timeout), deadlock_detected,
# serialization_failure.
_RETRY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
_UNDEFINED_TABLE = "42P01"
_UNDEFINED_COLUMN = "42703"
DEFAULT_OUTBOX_COLUMNS = OutboxColumns()
# ON DELETE actions that take care of the referencing rows, so the parent may be emptied first.
_SELF_CLEARING_ACTIONS = frozenset({"CASCADE", "SET NULL"})


class DatabaseError(HarnessError):
    """A service database could not be reached, reset or read. The message names the URL, never the
    password."""


@dataclass(frozen=True)
class ResetStats:
    """What one `reset_database` did."""

    database: str  # the URL without the password
    tables: tuple[str, ...]  # in the order they were emptied
    attempts: int  # runs of the DELETE batch: more after a lock timeout, a deadlock or a schema change
    seconds: float
    order_from_cache: bool  # False when the foreign keys had to be read first


@dataclass(frozen=True)
class OutboxRow:
    """One row of a publisher's outbox table. Naive timestamps (`timestamp without time zone`) are read
    as UTC, so that rows of different databases compare."""

    event_id: str
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime
    published_at: datetime | None


@dataclass(frozen=True)
class EventTables:
    """A database's event tables read in one connection; None for a table that does not exist."""

    outbox: tuple[OutboxRow, ...] | None
    processed: frozenset[str] | None


@dataclass(frozen=True)
class ReflectedForeignKey:
    child: str
    parent: str
    name: str
    ondelete: str  # NO ACTION, RESTRICT, CASCADE, SET NULL, SET DEFAULT
    deferrable: bool

    @property
    def soft(self) -> bool:
        """Whether the parent may be emptied before the child within the reset's transaction."""
        if self.ondelete in _SELF_CLEARING_ACTIONS:
            return True
        # SET CONSTRAINTS ALL DEFERRED moves a deferrable NO ACTION check to the commit; RESTRICT and
        # SET DEFAULT act at once, deferrable or not.
        return self.deferrable and self.ondelete == "NO ACTION"

    def __str__(self) -> str:
        extra = " DEFERRABLE" if self.deferrable else ""
        return f"{self.child}.{self.name} -> {self.parent} (ON DELETE {self.ondelete}{extra})"


@dataclass(frozen=True)
class _Plan:
    tables: tuple[str, ...]
    body: str  # the batch after `_head`: DELETEs, COMMIT and, for a cached order, the fingerprint
    fingerprint: str | None


_plans: dict[tuple[str, str, frozenset[str]], _Plan] = {}
_plans_lock = threading.Lock()


# --- engines -------------------------------------------------------------------------------------------


def redact(url: str | URL) -> str:
    """The URL as text with the password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(
    url: str | URL,
    *,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    application_name: str = APPLICATION_NAME,
) -> Engine:
    """An engine that opens a connection per use and closes it after (`NullPool`).

    `application_name` names the harness's sessions in `pg_stat_activity`, where a lock holder is looked
    for when a reset times out.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"{redact(url)} is not a database URL: {exc}") from None
    try:
        return create_engine(
            parsed,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": max(2, int(connect_timeout)),
                "application_name": application_name,
            },
        )
    except (ArgumentError, ImportError) as exc:
        raise DatabaseError(f"cannot make an engine for {redact(parsed)}: {exc}") from None


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)


def _reason(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's echo of the statement."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


def _autocommit(engine: Engine) -> Connection:
    """A connection with the driver's autocommit on: no BEGIN round trip of its own; batches that need a
    transaction say BEGIN and COMMIT themselves."""
    try:
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot connect to {redact(engine.url)}: {_reason(exc)}") from None


def create_databases(url: str | URL, names: Iterable[str]) -> list[str]:
    """Create each database of `names` that does not exist yet in the server of `url` (connected to an
    existing database of it); returns those created. A shared stack gives each xdist worker its own
    database this way, in the one PostgreSQL container of a service."""
    engine = make_engine(url)
    created = []
    try:
        with _autocommit(engine) as connection:
            existing = {row[0] for row in connection.exec_driver_sql("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    connection.exec_driver_sql(f"CREATE DATABASE {_quote_identifier(engine, name)}")
                    created.append(name)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot create databases in {redact(engine.url)}: {_reason(exc)}") from None
    finally:
        engine.dispose()
    return created


def _quote_identifier(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote_identifier(name)


def _quote_table(engine: Engine, table: str, schema: str | None = None) -> str:
    preparer = engine.dialect.identifier_preparer
    if schema is None and "." in table:
        schema, table = table.split(".", 1)
    if schema is None:
        return preparer.quote(table)
    return f"{preparer.quote_schema(schema)}.{preparer.quote(table)}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class HeldConnection:
    """One autocommit session of a database, opened at first use and kept until `close()`: the reset's
    session (module docstring). Between two batches it is idle outside any transaction, so it holds no
    lock; a batch that fails closes it. Safe to share between threads (one batch at a time)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self.opened = 0  # sessions opened so far (a test's and the benchmark's view of the reuse)

    def execute(self, sql: str, *, scalar: bool) -> Any:
        """Run `sql` (one simple-query batch) and return its last result's single value when `scalar`.
        A session the server ended since the last batch is replaced and the batch sent again, once."""
        with self._lock:
            for attempt in (1, 2):
                kept = self._connection is not None
                connection = self._connection or self._open()
                try:
                    result = connection.exec_driver_sql(sql)
                    return result.scalar_one() if scalar else None
                except BaseException as exc:
                    # Whatever went wrong, the session may be inside the batch's transaction: drop it,
                    # and the server rolls back (a kept session never holds a lock between batches).
                    self._discard()
                    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
                    if attempt == 1 and kept and lost:
                        continue
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def _open(self) -> Connection:
        self._connection = _autocommit(self.engine)
        self.opened += 1
        return self._connection

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.invalidate()
                connection.close()

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def close(self) -> None:
        """Close the session, if open. Safe to call twice."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.close()


# --- delete order ----------------------------------------------------------------------------------------


def _fingerprint_sql(schema: str) -> str:
    """One row, one column: a hash of the schema's tables and foreign keys."""
    nsp = _literal(schema)
    return (
        "SELECT md5(coalesce(string_agg(item, ',' ORDER BY item), '')) FROM ("
        " SELECT 't:' || c.relname AS item FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE n.nspname = {nsp} AND c.relkind IN ('r', 'p')"
        " UNION ALL"
        " SELECT 'f:' || k.conrelid::regclass::text || ':' || k.conname || ':' || k.confrelid::regclass::text"
        " || ':' || k.confdeltype::text || ':' || k.condeferrable::text"
        " FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace"
        f" WHERE n.nspname = {nsp} AND k.contype = 'f') AS schema_items"
    )


# pg_constraint.confdeltype -> the ON DELETE action it stands for.
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def _reflect_sql(schema: str) -> str:
    """The schema's tables and its foreign keys between them in one query: ("t", table, ...) rows and
    ("f", child, parent, name, confdeltype, deferrable) rows. One round trip instead of the several
    catalog queries (and the first-use setup) of SQLAlchemy's inspector."""
    nsp = _literal(schema)
    return (
        "SELECT 't', c.relname, NULL, NULL, NULL, NULL FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE n.nspname = {nsp} AND c.relkind IN ('r', 'p')"
        " UNION ALL"
        " SELECT 'f', child.relname, parent.relname, k.conname, k.confdeltype::text, k.condeferrable"
        " FROM pg_constraint k"
        " JOIN pg_class child ON child.oid = k.conrelid"
        " JOIN pg_namespace cn ON cn.oid = child.relnamespace"
        " JOIN pg_class parent ON parent.oid = k.confrelid"
        " JOIN pg_namespace pn ON pn.oid = parent.relnamespace"
        f" WHERE k.contype = 'f' AND cn.nspname = {nsp} AND pn.nspname = {nsp}"
    )


def _reflect(
    connection: Connection, schema: str, exclude: Collection[str]
) -> tuple[list[str], list[ReflectedForeignKey]]:
    rows = connection.exec_driver_sql(_reflect_sql(schema)).all()
    tables = sorted(str(row[1]) for row in rows if row[0] == "t" and row[1] not in exclude)
    known = set(tables)
    keys = [
        ReflectedForeignKey(
            child=str(child),
            parent=str(parent),
            name=str(name),
            ondelete=_ON_DELETE.get(str(action), "NO ACTION"),
            deferrable=bool(deferrable),
        )
        for kind, child, parent, name, action, deferrable in rows
        if kind == "f" and child in known and parent in known
    ]
    return tables, keys


def sort_for_delete(tables: Iterable[str], foreign_keys: Iterable[ReflectedForeignKey]) -> list[str]:
    """Children before parents. A self-reference needs no order (one DELETE removes every row). Where
    foreign keys form a cycle, the cycle is broken at a key that lets the parent go first (ON DELETE
    CASCADE or SET NULL, or a deferrable NO ACTION key that the reset defers to its commit); with none
    such, DatabaseError names the keys of the cycle."""
    remaining = set(tables)
    keys = [k for k in foreign_keys if k.child != k.parent and k.child in remaining and k.parent in remaining]
    order: list[str] = []
    while remaining:
        live = [k for k in keys if k.child in remaining and k.parent in remaining]
        blocked = {k.parent for k in live}
        ready = sorted(remaining - blocked)
        if not ready:
            # Every table left is referenced by another one left: a cycle. Let one table go whose
            # children's keys are all soft, the one with the fewest such keys.
            hard_blocked = {k.parent for k in live if not k.soft}
            candidates = sorted(remaining - hard_blocked, key=lambda t: (sum(k.parent == t for k in live), t))
            if not candidates:
                cycle = sorted(str(k) for k in live if not k.soft)
                raise DatabaseError(
                    f"tables {', '.join(sorted(remaining))} reference each other through foreign keys "
                    f"that no delete order satisfies: {'; '.join(cycle)}. Make one of them DEFERRABLE "
                    "or ON DELETE CASCADE / SET NULL, or pass the order to reset_database(order=...)"
                )
            ready = candidates[:1]
        order.extend(ready)
        remaining.difference_update(ready)
    return order


def table_delete_order(
    engine: Engine, *, schema: str = DEFAULT_SCHEMA, exclude: Collection[str] = DEFAULT_EXCLUDED_TABLES
) -> list[str]:
    """Every table of `schema` except `exclude`, children before parents, read from the database now."""
    with _autocommit(engine) as connection:
        try:
            tables, keys = _reflect(connection, schema, frozenset(exclude))
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the tables of {redact(engine.url)}: {_reason(exc)}") from None
    return sort_for_delete(tables, keys)


def _deletes(engine: Engine, tables: Sequence[str], schema: str) -> str:
    """The body of a reset batch: the DELETEs in order and the COMMIT (the head comes from `_head`)."""
    return "".join(f"DELETE FROM {_quote_table(engine, t, schema)};\n" for t in tables) + "COMMIT"


def _head(lock_timeout: float) -> str:
    """The start of a reset batch; not cached with the order, so each call's lock_timeout applies."""
    return (
        "BEGIN;\n"
        f"SET LOCAL lock_timeout = '{max(1, round(lock_timeout * 1000))}ms';\n"
        # No effect on keys that are not deferrable; lets a cycle of deferrable keys be emptied.
        "SET CONSTRAINTS ALL DEFERRED;\n"
    )


def _plan(engine: Engine, schema: str, exclude: frozenset[str]) -> _Plan:
    with _autocommit(engine) as connection:
        try:
            # The fingerprint first: a table created during the reflection then changes the next one.
            fingerprint = connection.exec_driver_sql(_fingerprint_sql(schema)).scalar_one()
            tables, keys = _reflect(connection, schema, exclude)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the tables of {redact(engine.url)}: {_reason(exc)}") from None
    order = tuple(sort_for_delete(tables, keys))
    # The batch ends with the fingerprint, read again after the commit: one round trip tells whether
    # the cached order is still the schema's.
    body = _deletes(engine, order, schema) + ";\n" + _fingerprint_sql(schema)
    return _Plan(order, body, fingerprint)


def clear_delete_order_cache() -> None:
    """Forget every cached delete order (they are also renewed on their own when a schema changes)."""
    with _plans_lock:
        _plans.clear()


# --- reset -----------------------------------------------------------------------------------------------


def _lock_holders(engine: Engine) -> str:
    """Other sessions of the database with an open transaction, for the message of a failed reset."""
    sql = (
        "SELECT pid, state, application_name, round(extract(epoch FROM now() - xact_start)::numeric, 1),"
        " left(regexp_replace(query, '\\s+', ' ', 'g'), 120) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        " ORDER BY xact_start LIMIT 5"
    )
    try:
        with _autocommit(engine) as connection:
            rows = connection.exec_driver_sql(sql).all()
    except (SQLAlchemyError, DatabaseError):
        return ""
    if not rows:
        return ""
    described = [
        f"pid {pid} ({state}, {seconds} s in its transaction, application {app or '?'!r}, "
        f"last query: {query})"
        for pid, state, app, seconds, query in rows
    ]
    return "; sessions with an open transaction: " + "; ".join(described)


def _execute(engine: Engine, held: HeldConnection | None, sql: str, *, scalar: bool) -> Any:
    if held is not None:
        return held.execute(sql, scalar=scalar)
    with _autocommit(engine) as connection:
        result = connection.exec_driver_sql(sql)
        return result.scalar_one() if scalar else None


def reset_database(
    engine: Engine,
    order: Sequence[str] | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    exclude: Collection[str] = DEFAULT_EXCLUDED_TABLES,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    attempts: int = DEFAULT_RESET_ATTEMPTS,
    connection: HeldConnection | None = None,
) -> ResetStats:
    """Empty every table of `schema` but `exclude` with DELETE, in one transaction and one round trip.

    `order` (table names, children first) replaces the order read from the foreign keys. Each attempt
    waits at most `lock_timeout` seconds for a lock a service holds; a lock timeout or a deadlock makes
    it try again, `attempts` times in all, then DatabaseError names the sessions holding transactions.
    `connection` (a HeldConnection of `engine`'s database) runs the batch in a kept session instead of a
    new one: the same statements, without the cost of connecting.
    """
    started = time.perf_counter()
    url = redact(engine.url)
    key = (engine.url.render_as_string(hide_password=False), schema, frozenset(exclude))
    from_cache = order is None
    if order is not None:
        plan = _Plan(tuple(order), _deletes(engine, order, schema), None)
    else:
        with _plans_lock:
            cached = _plans.get(key)
        if cached is None:
            from_cache = False
            cached = _plan(engine, schema, key[2])
        plan = cached
    renewed = False  # whether this reset read the schema again
    executions = 0
    lock_failures = 0
    while True:
        executions += 1
        try:
            fingerprint = _execute(engine, connection, _head(lock_timeout) + plan.body, scalar=order is None)
        except DBAPIError as exc:
            state = _sqlstate(exc)
            if state in _RETRY_SQLSTATES:
                lock_failures += 1
                if lock_failures < attempts:
                    time.sleep(min(0.05 * lock_failures, 0.25))
                    continue
                raise DatabaseError(
                    f"cannot reset {url} (attempt {lock_failures} of {attempts}, each waiting at most "
                    f"{lock_timeout:g} s for a lock): {_reason(exc)}{_lock_holders(engine)}"
                ) from None
            if from_cache and not renewed:
                # The cached order may be stale (a table is gone, a new one references an old one):
                # read the schema again and try once more before calling it an error.
                plan, renewed, from_cache = _plan(engine, schema, key[2]), True, False
                continue
            raise DatabaseError(f"cannot reset {url}: {_reason(exc)}") from None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot reset {url}: {_reason(exc)}") from None
        if order is not None or fingerprint == plan.fingerprint or renewed:
            break
        # Tables or foreign keys changed since the order was read: read them again, and empty the tables
        # the old order did not know. (Should the schema change again meanwhile, the next reset will.)
        plan, renewed, from_cache = _plan(engine, schema, key[2]), True, False
    if order is None:
        with _plans_lock:
            _plans[key] = plan
    return ResetStats(url, plan.tables, executions, time.perf_counter() - started, from_cache)


# --- event tables ----------------------------------------------------------------------------------------


@overload
def _as_utc(value: datetime) -> datetime: ...
@overload
def _as_utc(value: None) -> None: ...
def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _payload(value: Any) -> dict[str, Any]:
    if isinstance(value, str | bytes | bytearray):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"payload is {type(value).__name__}, not a JSON object")
    return dict(value)


def _select_outbox(
    connection: Connection, engine: Engine, table: str, columns: OutboxColumns = DEFAULT_OUTBOX_COLUMNS
) -> tuple[OutboxRow, ...] | None:
    q = functools.partial(_quote_identifier, engine)
    sql = (
        f"SELECT {q(columns.event_id)}, {q(columns.event_type)}, {q(columns.payload)}, "
        f"{q(columns.occurred_at)}, {q(columns.published_at)} "
        f"FROM {_quote_table(engine, table)} ORDER BY {q(columns.occurred_at)}, {q(columns.event_id)}"
    )
    try:
        rows = connection.exec_driver_sql(sql).all()
    except DBAPIError as exc:
        if _sqlstate(exc) == _UNDEFINED_TABLE:
            return None
        if _sqlstate(exc) == _UNDEFINED_COLUMN:
            raise DatabaseError(
                f"cannot read {table} of {redact(engine.url)}: {_reason(exc)}; name its columns in "
                "[tool.integration.events.outbox_columns] (event_id, event_type, payload, occurred_at, "
                "published_at)"
            ) from None
        raise DatabaseError(f"cannot read {table} of {redact(engine.url)}: {_reason(exc)}") from None
    result = []
    for event_id, event_type, payload, occurred_at, published_at in rows:
        try:
            data = _payload(payload)
        except ValueError as exc:
            raise DatabaseError(
                f"{table} of {redact(engine.url)}: event {event_id} ({event_type}) has a payload that is "
                f"not a JSON object: {exc}"
            ) from None
        # occurred_at is a timestamp (docs/conventions.md); published_at is NULL until the row is sent.
        result.append(OutboxRow(str(event_id), event_type, data, _as_utc(occurred_at), _as_utc(published_at)))
    return tuple(result)


def _select_processed(
    connection: Connection, engine: Engine, table: str, column: str = "event_id"
) -> frozenset[str] | None:
    sql = f"SELECT {_quote_identifier(engine, column)} FROM {_quote_table(engine, table)}"
    try:
        rows = connection.exec_driver_sql(sql).all()
    except DBAPIError as exc:
        if _sqlstate(exc) == _UNDEFINED_TABLE:
            return None
        if _sqlstate(exc) == _UNDEFINED_COLUMN:
            raise DatabaseError(
                f"cannot read {table} of {redact(engine.url)}: {_reason(exc)}; name its event id column "
                "with processed_event_id in [tool.integration.events]"
            ) from None
        raise DatabaseError(f"cannot read {table} of {redact(engine.url)}: {_reason(exc)}") from None
    return frozenset(str(event_id) for (event_id,) in rows)


def read_outbox(
    engine: Engine, table: str = DEFAULT_OUTBOX_TABLE, columns: OutboxColumns = DEFAULT_OUTBOX_COLUMNS
) -> list[OutboxRow]:
    """The outbox rows ordered by occurred_at then event_id; [] when the table does not exist (yet)."""
    with _autocommit(engine) as connection:
        return list(_select_outbox(connection, engine, table, columns) or ())


def processed_ids(engine: Engine, table: str = DEFAULT_PROCESSED_TABLE) -> set[str]:
    """The event ids a consumer has processed; empty when the table does not exist (yet)."""
    with _autocommit(engine) as connection:
        return set(_select_processed(connection, engine, table) or ())


def count_processed(engine: Engine, table: str = DEFAULT_PROCESSED_TABLE) -> int:
    """How many events a consumer has processed; 0 when the table does not exist (yet)."""
    sql = f"SELECT count(*) FROM {_quote_table(engine, table)}"
    with _autocommit(engine) as connection:
        try:
            return int(connection.exec_driver_sql(sql).scalar_one())
        except DBAPIError as exc:
            if _sqlstate(exc) == _UNDEFINED_TABLE:
                return 0
            raise DatabaseError(f"cannot read {table} of {redact(engine.url)}: {_reason(exc)}") from None


def read_event_tables(
    engine: Engine,
    *,
    outbox_table: str | None = DEFAULT_OUTBOX_TABLE,
    processed_table: str | None = DEFAULT_PROCESSED_TABLE,
    outbox_columns: OutboxColumns = DEFAULT_OUTBOX_COLUMNS,
    processed_event_id: str = "event_id",
) -> EventTables:
    """Both event tables in one connection (None for a table not asked for or not there)."""
    with _autocommit(engine) as connection:
        outbox = _select_outbox(connection, engine, outbox_table, outbox_columns) if outbox_table else None
        processed = (
            _select_processed(connection, engine, processed_table, processed_event_id)
            if processed_table
            else None
        )
    return EventTables(outbox, processed)
