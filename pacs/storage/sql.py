"""The index database connection: one engine per process, one write discipline.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so that a committed
row survives a power cut, and it takes one writer at a time: a thread lock queues this
process's writers and an ``flock`` on a file beside the database queues other processes'
(the kernel wakes the next writer at once, where SQLite's busy handler would sleep and poll),
then ``BEGIN IMMEDIATE`` takes SQLite's own write lock. Concurrent associations and several
receiver processes wait in line instead of failing with "database is locked". Readers never
wait. PostgreSQL takes the same statements through a connection pool; row locks taken by
:mod:`pacs.storage.index` order concurrent writers to the same study.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Dialect, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from pacs.errors import IndexConflict, IndexUnavailable, StorageFull
from pacs.storage.schema import metadata

SQLITE_BUSY_TIMEOUT_MS = 60_000
_SCHEMA_LOCK_ID = 0x5041_4353  # "PACS": serialises schema creation across PostgreSQL clients


class Database:
    """The index's engine plus the rules for writing to it."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._lock_file: int | None = None
        try:
            if self.is_sqlite:
                self.engine = _sqlite_engine(url)
                database = self.engine.url.database
                if database and database != ":memory:":
                    self._lock_file = os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT)
            else:
                self.engine = create_engine(
                    url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
                )
            self.create_schema()
        except OperationalError as exc:
            raise IndexUnavailable(f"cannot open the index database: {exc.orig}") from exc

    def create_schema(self) -> None:
        """Create missing tables, and the nullable columns and indexes added since a table
        was made; safe when several processes start at once."""
        with self.writing() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SCHEMA_LOCK_ID})
            metadata.create_all(conn, checkfirst=True)
            inspector = inspect(conn)
            for table in metadata.sorted_tables:
                present = {column["name"] for column in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present and column.nullable:
                        kind = column.type.compile(dialect=conn.dialect)
                        conn.execute(text(f"ALTER TABLE {table.name} "
                                          f"ADD COLUMN {column.name} {kind}"))
                for index in table.indexes:
                    index.create(conn, checkfirst=True)

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Wait for this process's and other processes' SQLite writers (PostgreSQL: none)."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            if lock is not None:
                lock.release()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection inside a write transaction, committed on exit, rolled back on error."""
        with self._writer_turn(), _wrap_db_errors(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def writing_cursor(self) -> Iterator[Any]:
        """The same write transaction as :meth:`writing`, on the driver's own cursor.

        For the index's hot path, whose statements are compiled once and skip SQLAlchemy's
        per-statement work; committed on exit, rolled back on error.
        """
        with self._writer_turn(), _wrap_db_errors():
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                if self.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                except BaseException:
                    connection.rollback()
                    raise
                connection.commit()
            finally:
                connection.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for queries (a deferred transaction: never blocks writers)."""
        with _wrap_db_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def querying(self) -> Iterator[Any]:
        """A driver cursor for hot-path reads, without SQLAlchemy's transaction handling.

        Each statement is then its own snapshot (SQLite runs in autocommit mode here;
        PostgreSQL's implicit transaction is rolled back when the connection goes back to
        the pool), so use it for single-statement lookups only.
        """
        with _wrap_db_errors():
            connection = self.engine.raw_connection()
            try:
                yield connection.cursor()
            finally:
                connection.close()

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, and in forked children)."""
        self.engine.dispose()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine


_CONFLICT_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


@contextmanager
def _wrap_db_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise _operational_error(exc.orig) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise IndexUnavailable(f"lost the index database connection: {exc.orig}") from exc
        raise
    except (sqlite3.OperationalError, psycopg.OperationalError) as exc:
        # Raised by the statements the index runs on the driver's cursor directly.
        raise _operational_error(exc) from exc


def _operational_error(exc: BaseException) -> Exception:
    message = str(exc)
    if getattr(exc, "sqlstate", None) in _CONFLICT_SQLSTATES:
        return IndexConflict(f"index write conflict: {message}")
    if "disk is full" in message or "No space left" in message:
        return StorageFull(f"the index database is full: {message}")
    return IndexUnavailable(f"index database error: {message}")


class CompiledStatement:
    """A Core statement compiled once for one dialect and run straight on the driver's cursor.

    Indexing an instance spent a third of its CPU in SQLAlchemy's per-statement work (~70 µs
    a statement); the few statements of the hot path (the index's per-instance statements,
    the lookup of a request's token or session) skip it. Anything rarer goes through
    SQLAlchemy as usual, in the same transaction.
    """

    def __init__(self, statement: Any, dialect: Dialect,
                 column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self._names = compiled.positiontup  # parameter order for "?" styles, else None
        # Values the statement carries itself (the 0 of "num_instances > 0", the values of
        # an INSERT built with .values()); the caller's parameters fill or override them.
        self._fixed = compiled.params
        self.keys = [column.key for column in getattr(statement, "selected_columns", ())]

    def run(self, cursor: Any, params: Mapping[str, Any]) -> Any:
        """Execute with ``params`` by name; return the cursor."""
        if self._fixed:
            params = {**self._fixed, **params}
        if self._names is None:
            cursor.execute(self.sql, params)
        else:
            cursor.execute(self.sql, [params[name] for name in self._names])
        return cursor

    def first(self, cursor: Any, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row as ``{column: value}``, or None."""
        rows = self.run(cursor, params).fetchall()
        return dict(zip(self.keys, rows[0], strict=True)) if rows else None

    def one(self, cursor: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """The only row; raise if there is none."""
        row = self.first(cursor, params)
        if row is None:
            raise LookupError(f"no row for {dict(params)!r}")
        return row


def driver_datetime(value: datetime | str | None) -> datetime | None:
    """A ``DateTime(timezone=True)`` column's value as the driver gives it back (through
    :class:`CompiledStatement`), as an aware UTC datetime.

    SQLite's driver returns the text SQLAlchemy stored (a naive UTC time), psycopg an aware
    datetime.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
