"""Where the request ledger is kept: a SQLite file (one host) or a PostgreSQL database (every
host of a deployment). Both take the same SQL, written with `?` placeholders; every statement
commits before it returns, and `execute` returns how many rows it changed, so a conditional
UPDATE is an atomic test-and-set on both.

A `LedgerSchema` is created once per store: its tables, then any column a ledger written by an
older version lacks (added, never dropped)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")


@dataclass(frozen=True)
class LedgerSchema:
    tables: list[str]
    """CREATE TABLE IF NOT EXISTS statements (and CREATE INDEX IF NOT EXISTS, on columns every
    version had)."""
    added_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """table → {column: SQL type} for columns later versions added."""
    renamed_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """table → {old name: new name} for columns later versions renamed."""
    filled_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """table → {added column: SQL expression} that fills the column's rows when it is added."""

    @property
    def migrated_tables(self) -> set[str]:
        return set(self.added_columns) | set(self.renamed_columns)


class _Connection:
    """A thread's connection, closed when the thread ends (its thread-local goes) or the store
    closes, whichever is first; never by a forked child (the connection is its parent's)."""

    def __init__(self, connection):
        self.pid, self.connection = os.getpid(), connection

    def close(self) -> None:
        if self.pid == os.getpid():
            self.connection.close()

    __del__ = close


class LedgerStore:
    """Runs one statement (`?` placeholders) and reads its cursor with `read`; the stores differ
    only in how they reach the database. Each thread of each process has its own connection, opened
    on its first statement and kept until the thread ends or `close` (a forked child opens its own:
    a connection is never shared across a fork)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _connect(self):
        raise NotImplementedError

    def _run(self, sql: str, params: tuple, read: Callable):
        raise NotImplementedError

    def _is_closed(self, connection) -> bool:
        return False

    def _connection(self):
        held = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid() or self._is_closed(held.connection):
            held = self._local.held = _Connection(self._connect())
            with self._lock:
                self._open.add(held)
        return held.connection

    def execute(self, sql: str, params: tuple = ()) -> int:
        return self._run(sql, params, lambda cursor: cursor.rowcount)

    def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        return self._run(sql, params, lambda cursor: cursor.fetchone())

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._run(sql, params, lambda cursor: cursor.fetchall())

    def close(self) -> None:
        """Closes every thread's connection; a later statement opens a new one."""
        with self._lock:
            self._local = threading.local()
            connections = list(self._open)
        for held in connections:
            held.close()


def open_store(location: str | Path, schema: LedgerSchema) -> LedgerStore:
    """`location`: a postgresql:// URL, else the path of a SQLite file."""
    if str(location).startswith(POSTGRES_SCHEMES):
        return PostgresStore(str(location), schema)
    return SqliteStore(Path(location).resolve(), schema)


def _migrations(schema: LedgerSchema, existing: dict[str, set[str]]) -> list[str]:
    """What brings a ledger an earlier version wrote to `schema`, given each table's columns: the
    renames first, then the columns added since (each filled, where the schema says how)."""
    renames = [
        f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"
        for table, columns in schema.renamed_columns.items()
        for old, new in columns.items()
        if old in existing[table] and new not in existing[table]
    ]
    additions = []
    for table, columns in schema.added_columns.items():
        for name, kind in columns.items():
            if name in existing[table]:
                continue
            additions.append(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if fill := schema.filled_columns.get(table, {}).get(name):
                additions.append(f"UPDATE {table} SET {name} = {fill}")
    return renames + additions


class SqliteStore(LedgerStore):
    """WAL lets readers and one writer (of any thread or process) work at once; synchronous=FULL
    makes each commit durable. Connections are kept: opening one and closing the last one
    (which checkpoints the WAL) cost 1.5 ms of each statement's 1.7 ms when each statement had its
    own."""

    def __init__(self, path: Path, schema: LedgerSchema):
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            _use_wal(db)
            db.execute("BEGIN IMMEDIATE")  # processes migrating at once queue up
            for statement in schema.tables:
                db.execute(statement)
            existing = {
                t: {row[1] for row in db.execute(f"PRAGMA table_info({t})")} for t in schema.migrated_tables
            }
            for statement in _migrations(schema, existing):
                db.execute(statement)
            db.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        # used by one thread only; `close` may come from another
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _run(self, sql: str, params: tuple, read: Callable):
        return read(self._connection().execute(sql, params))


class PostgresStore(LedgerStore):
    """Autocommit connections (the step's, the lease keeper's and the webhook receiver's)."""

    SCHEMA_LOCK = 0x464C5558  # advisory lock: processes creating the tables at once queue up

    def __init__(self, url: str, schema: LedgerSchema):
        super().__init__()
        self._url = url.replace("postgresql+psycopg2://", "postgresql://")
        with self._connection().cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (self.SCHEMA_LOCK,))
            try:
                for statement in schema.tables:
                    cursor.execute(statement)
                existing = {}
                for table in schema.migrated_tables:
                    cursor.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema=current_schema() AND table_name=%s",
                        (table,),
                    )
                    existing[table] = {row[0] for row in cursor.fetchall()}
                for statement in _migrations(schema, existing):
                    cursor.execute(statement)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (self.SCHEMA_LOCK,))

    def _connect(self):
        import psycopg2  # the `postgres` extra

        connection = psycopg2.connect(self._url)
        connection.autocommit = True
        return connection

    def _is_closed(self, connection) -> bool:
        return bool(connection.closed)  # e.g. the server ended it: the next statement reconnects

    def _run(self, sql: str, params: tuple, read: Callable):
        with self._connection().cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return read(cursor)


def _use_wal(db: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL (it stays so). The switch ignores the busy timeout, so processes
    opening the ledger at the same moment retry it."""
    for attempt in range(attempts):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
