"""The request ledger: what was asked of fal for each (partition, prompt_id, endpoint), durably,
so that nothing is paid for twice across retries, crashes and re-runs.

It is kept in a SQLite file beside the catalog, or in PostgreSQL when runs execute on several
machines (ledger_stores); each write commits before the call returns. A row moves
submitting (intent recorded, token for the webhook) → submitted (fal's request id)
→ stored (the catalog rows of its files), or → failed. Its fingerprint is a hash of the endpoint
and the full input, so an edited row is a new request. Webhooks are kept by token.

`PartitionLedger` is one partition's view of it, as the fal batch runner records submits
(fal.batch.Ledger): a lost submit's webhook wakes its waiter directly, without polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..fal.batch import GenerationJob
from .ledger_stores import open_store

LEDGER_TABLES = [
    """CREATE TABLE IF NOT EXISTS requests (
        partition TEXT NOT NULL, job_key TEXT NOT NULL, endpoint TEXT NOT NULL,
        fingerprint TEXT NOT NULL, state TEXT NOT NULL, token TEXT, request_id TEXT,
        rows_json TEXT, error TEXT, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (partition, job_key, endpoint))""",
    """CREATE TABLE IF NOT EXISTS webhooks (
        token TEXT PRIMARY KEY, request_id TEXT NOT NULL, status TEXT,
        received_at DOUBLE PRECISION NOT NULL)""",
]


def fingerprint(endpoint: str, identity: dict) -> str:
    """Identity of a request: the endpoint and its full input (with any uploaded file's URL
    replaced by the file's content hash, so a re-upload is still the same request)."""
    return hashlib.sha256(json.dumps([endpoint, identity], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    fingerprint: str
    state: str
    token: str | None
    request_id: str | None
    rows: list[dict] | None
    updated_at: float


class RequestLedger:
    """`location`: a SQLite file's path or a postgresql:// URL. Close it when done."""

    def __init__(self, location: str | Path):
        self._store = open_store(location, LEDGER_TABLES)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> RequestLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: tuple) -> None:
        self._store.execute(sql, params)

    def entry(self, partition: str, job_key: str, endpoint: str) -> LedgerEntry | None:
        row = self._store.fetchone(
            "SELECT fingerprint, state, token, request_id, rows_json, updated_at FROM requests "
            "WHERE partition=? AND job_key=? AND endpoint=?",
            (partition, job_key, endpoint),
        )
        if row is None:
            return None
        rows = json.loads(row[4]) if row[4] else None
        for record in rows or []:
            record["created_at"] = datetime.fromisoformat(record["created_at"])
        return LedgerEntry(row[0], row[1], row[2], row[3], rows, row[5])

    def submitting(self, partition: str, job_key: str, endpoint: str, fingerprint_: str) -> str:
        token = uuid.uuid4().hex
        self._write(
            "INSERT INTO requests (partition, job_key, endpoint, fingerprint, state, token, updated_at) "
            "VALUES (?, ?, ?, ?, 'submitting', ?, ?) "
            "ON CONFLICT (partition, job_key, endpoint) DO UPDATE SET "
            "fingerprint=excluded.fingerprint, state='submitting', token=excluded.token, request_id=NULL, "
            "rows_json=NULL, error=NULL, updated_at=excluded.updated_at",
            (partition, job_key, endpoint, fingerprint_, token, time.time()),
        )
        return token

    def submitted(self, partition: str, job_key: str, endpoint: str, request_id: str) -> None:
        self._write(
            "UPDATE requests SET state='submitted', request_id=?, updated_at=? "
            "WHERE partition=? AND job_key=? AND endpoint=?",
            (request_id, time.time(), partition, job_key, endpoint),
        )

    def stored(self, partition: str, job_key: str, endpoint: str, request_id: str, rows: list[dict]) -> None:
        self._write(
            "UPDATE requests SET state='stored', request_id=?, rows_json=?, error=NULL, updated_at=? "
            "WHERE partition=? AND job_key=? AND endpoint=?",
            (request_id, json.dumps(rows, default=_isoformat), time.time(), partition, job_key, endpoint),
        )

    def failed(self, partition: str, job_key: str, endpoint: str, error: str) -> None:
        """A request that ended without files; it is not billed, so a re-run may send it again."""
        self._write(
            "UPDATE requests SET state='failed', error=?, updated_at=? "
            "WHERE partition=? AND job_key=? AND endpoint=?",
            (error, time.time(), partition, job_key, endpoint),
        )

    def record_webhook(self, token: str, request_id: str, status: str | None) -> None:
        self._write(
            "INSERT INTO webhooks (token, request_id, status, received_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (token) DO NOTHING",
            (token, request_id, status, time.time()),
        )

    def webhook_request_id(self, token: str) -> str | None:
        row = self._store.fetchone("SELECT request_id FROM webhooks WHERE token=?", (token,))
        return row[0] if row else None

    def partition(self, partition: str, lost_wait: float) -> PartitionLedger:
        return PartitionLedger(self, partition, lost_wait)


class PartitionLedger:
    """One partition's requests. `lost_wait`: seconds to wait for a lost submit's webhook."""

    def __init__(self, ledger: RequestLedger, partition: str, lost_wait: float):
        self.ledger, self.partition, self.lost_wait = ledger, partition, lost_wait
        self._waiters: dict[str, asyncio.Future] = {}
        self._lock = threading.Lock()

    def entry(self, job: GenerationJob) -> LedgerEntry | None:
        return self.ledger.entry(self.partition, job.prompt_id, job.endpoint)

    def submitting(self, job: GenerationJob) -> str:
        return self.ledger.submitting(self.partition, job.prompt_id, job.endpoint, job.fingerprint)

    def submitted(self, job: GenerationJob, request_id: str) -> None:
        self.ledger.submitted(self.partition, job.prompt_id, job.endpoint, request_id)

    def stored(self, job: GenerationJob, request_id: str, rows: list[dict]) -> None:
        self.ledger.stored(self.partition, job.prompt_id, job.endpoint, request_id, rows)

    def failed(self, job: GenerationJob, error: str) -> None:
        self.ledger.failed(self.partition, job.prompt_id, job.endpoint, error)

    async def find_lost(self, job: GenerationJob, token: str) -> str | None:
        """The request id fal's webhook reported for the submit attempt `token`: already in the
        ledger (received by an earlier run), or delivered within `lost_wait` seconds."""
        arrival = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[token] = arrival  # before looking, so a delivery in between is not missed
        try:
            if found := await asyncio.to_thread(self.ledger.webhook_request_id, token):
                return found
            return await asyncio.wait_for(arrival, self.lost_wait)
        except TimeoutError:
            return None
        finally:
            with self._lock:
                self._waiters.pop(token, None)

    def webhook_received(self, token: str, body: dict) -> None:
        """Called by the webhook receiver's thread (fal may deliver more than once)."""
        self.ledger.record_webhook(token, body["request_id"], body.get("status"))
        with self._lock:
            waiter = self._waiters.get(token)
        if waiter is not None:
            waiter.get_loop().call_soon_threadsafe(_settle, waiter, body["request_id"])


def _settle(future: asyncio.Future, value: str) -> None:
    if not future.done():
        future.set_result(value)


def _isoformat(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the ledger")
