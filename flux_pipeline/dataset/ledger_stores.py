"""Where the request ledger is kept: a SQLite file (one host) or a PostgreSQL database (every
host of a deployment). Both take the same SQL, written with `?` placeholders; every statement
commits before it returns, and `execute` returns how many rows it changed, so a conditional
UPDATE is an atomic test-and-set on both.

A `LedgerSchema` is created once per store: its tables, then any column a ledger written by an
older version lacks (added, never dropped)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")


@dataclass(frozen=True)
class LedgerSchema:
    tables: list[str]
    """CREATE TABLE IF NOT EXISTS statements."""
    added_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """table → {column: SQL type} for columns later versions added."""
    renamed_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    """table → {old name: new name} for columns later versions renamed."""

    @property
    def migrated_tables(self) -> set[str]:
        return set(self.added_columns) | set(self.renamed_columns)


class LedgerStore:
    """Runs one statement (`?` placeholders) and reads its cursor with `read`; the stores differ
    only in how they reach the database."""

    def _run(self, sql: str, params: tuple, read: Callable):
        raise NotImplementedError

    def execute(self, sql: str, params: tuple = ()) -> int:
        return self._run(sql, params, lambda cursor: cursor.rowcount)

    def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        return self._run(sql, params, lambda cursor: cursor.fetchone())

    def fetchall(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._run(sql, params, lambda cursor: cursor.fetchall())

    def close(self) -> None:
        pass


def open_store(location: str | Path, schema: LedgerSchema) -> LedgerStore:
    """`location`: a postgresql:// URL, else the path of a SQLite file."""
    if str(location).startswith(POSTGRES_SCHEMES):
        return PostgresStore(str(location), schema)
    return SqliteStore(Path(location).resolve(), schema)


def _migrations(schema: LedgerSchema, existing: dict[str, set[str]]) -> list[str]:
    """What brings a ledger an earlier version wrote to `schema`, given each table's columns: the
    renames first, then the columns added since."""
    renames = [
        f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"
        for table, columns in schema.renamed_columns.items()
        for old, new in columns.items()
        if old in existing[table] and new not in existing[table]
    ]
    additions = [
        f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
        for table, columns in schema.added_columns.items()
        for name, kind in columns.items()
        if name not in existing[table]
    ]
    return renames + additions


class SqliteStore(LedgerStore):
    """A connection per call: safe from any thread (the webhook receiver) and process; WAL
    lets readers and one writer work at once; synchronous=FULL makes each commit durable."""

    def __init__(self, path: Path, schema: LedgerSchema):
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
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _run(self, sql: str, params: tuple, read: Callable):
        with closing(self._connect()) as db:
            return read(db.execute(sql, params))


class PostgresStore(LedgerStore):
    """One autocommit connection per thread (the step's, the lease keeper's and the webhook
    receiver's)."""

    SCHEMA_LOCK = 0x464C5558  # advisory lock: processes creating the tables at once queue up

    def __init__(self, url: str, schema: LedgerSchema):
        import psycopg2  # the `postgres` extra

        self._connect = lambda: psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
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

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._connect()
            connection.autocommit = True
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _run(self, sql: str, params: tuple, read: Callable):
        with self._connection().cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return read(cursor)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


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
