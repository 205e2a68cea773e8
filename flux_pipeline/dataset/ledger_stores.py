"""Where the request ledger is kept: a SQLite file (one host) or a PostgreSQL database (every
host of a deployment). Both take the same SQL, written with `?` placeholders; every statement
commits before it returns."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Protocol

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")


class LedgerStore(Protocol):
    def execute(self, sql: str, params: tuple = ()) -> None: ...
    def fetchone(self, sql: str, params: tuple = ()) -> tuple | None: ...
    def close(self) -> None: ...


def open_store(location: str | Path, schema: list[str]) -> LedgerStore:
    """`location`: a postgresql:// URL, else the path of a SQLite file. Creates `schema` once."""
    if str(location).startswith(POSTGRES_SCHEMES):
        return PostgresStore(str(location), schema)
    return SqliteStore(Path(location).resolve(), schema)


class SqliteStore:
    """A connection per call: safe from any thread (the webhook receiver) and process; WAL
    lets readers and one writer work at once; synchronous=FULL makes each commit durable."""

    def __init__(self, path: Path, schema: list[str]):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            _use_wal(db)
            for statement in schema:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def execute(self, sql: str, params: tuple = ()) -> None:
        with closing(self._connect()) as db:
            db.execute(sql, params)

    def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        with closing(self._connect()) as db:
            return db.execute(sql, params).fetchone()

    def close(self) -> None:
        pass


class PostgresStore:
    """One autocommit connection per thread (the step's and the webhook receiver's)."""

    SCHEMA_LOCK = 0x464C5558  # advisory lock: processes creating the tables at once queue up

    def __init__(self, url: str, schema: list[str]):
        import psycopg2  # the `postgres` extra

        self._connect = lambda: psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        with self._connection().cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (self.SCHEMA_LOCK,))
            try:
                for statement in schema:
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

    def execute(self, sql: str, params: tuple = ()) -> None:
        with self._connection().cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)

    def fetchone(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._connection().cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor.fetchone()

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
