"""The request ledger: what was asked of fal for each (partition, prompt_id, endpoint), durably,
so that nothing is paid for twice across retries, crashes, re-runs and concurrent runs.

It is kept in a SQLite file beside the catalog, or in PostgreSQL when runs execute on several
machines (ledger_stores); each write commits before the call returns. A row moves
planned (claimed, nothing sent) → submitting (intent and exact payload recorded, token for the
webhook) → submitted (fal's request id) → stored (the catalog rows of its files), or → failed.
Its fingerprint is a hash of the endpoint and the full input, and it records the backend (fal's
host, or the emulator) that made it, so an edited row, or one made on another backend, is a new
request.

Claims: a run works on a row only while it owns it. A claim is an atomic test-and-set (the row is
unowned, already the run's, or its owner's lease ran out), renewed by the owner while it works
and released when the row is stored or failed, so two runs of one partition never submit the
same row, and a dead run's rows are taken over once its lease expires.

Money: the submitting run (and its backfill) and the time of the submit are recorded; when fal
completes a request, its billed units, unit price and cost; and, once a step is done, which
run's materialization reports that spend (the first to end after it was billed, so a crashed
run's spend is reported by the next, and every request's cost is counted exactly once).

`PartitionLedger` is one run's view of a partition, as the fal batch runner records submits
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
from .ledger_stores import LedgerSchema, open_store

LEDGER_SCHEMA = LedgerSchema(
    tables=[
        """CREATE TABLE IF NOT EXISTS requests (
        partition TEXT NOT NULL, job_key TEXT NOT NULL, endpoint TEXT NOT NULL,
        fingerprint TEXT NOT NULL, state TEXT NOT NULL, token TEXT, request_id TEXT,
        rows_json TEXT, error TEXT, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (partition, job_key, endpoint))""",
        """CREATE TABLE IF NOT EXISTS webhooks (
        token TEXT PRIMARY KEY, request_id TEXT NOT NULL, status TEXT,
        received_at DOUBLE PRECISION NOT NULL)""",
    ],
    added_columns={
        "requests": {
            "backend": "TEXT",
            "payload_json": "TEXT",
            "submitted_at": "DOUBLE PRECISION",
            "run_id": "TEXT",
            "backfill_id": "TEXT",
            "owner": "TEXT",
            "lease_until": "DOUBLE PRECISION",
            "billing_unit": "TEXT",
            "billed_units": "DOUBLE PRECISION",
            "unit_price": "DOUBLE PRECISION",
            "price_source": "TEXT",
            "cost_usd": "DOUBLE PRECISION",
            "billed_megapixels": "DOUBLE PRECISION",
            "billed_at": "DOUBLE PRECISION",
            "spent_run_id": "TEXT",
        }
    },
)
KEY = "partition=? AND job_key=? AND endpoint=?"
ENTRY_COLUMNS = (
    "fingerprint, state, token, request_id, rows_json, updated_at, backend, payload_json, submitted_at, owner"
)
REQUEST_COLUMNS = [
    "partition",
    "prompt_id",
    "endpoint",
    "state",
    "request_id",
    "backend",
    "run_id",
    "backfill_id",
    "submitted_at",
    "billing_unit",
    "billed_units",
    "unit_price",
    "price_source",
    "cost_usd",
    "billed_at",
    "spent_run_id",
    "error",
]
"""The columns of `RequestLedger.requests()`: the audit view of every request."""


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
    backend: str | None = None
    payload: dict | None = None
    """The exact input the last submit sent."""
    submitted_at: float | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Billing:
    """What fal billed for one request."""

    unit: str
    units: float
    unit_price: float
    price_source: str
    cost_usd: float
    megapixels: int


class RequestLedger:
    """`location`: a SQLite file's path or a postgresql:// URL. Close it when done."""

    def __init__(self, location: str | Path):
        self._store = open_store(location, LEDGER_SCHEMA)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> RequestLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entry(self, partition: str, job_key: str, endpoint: str) -> LedgerEntry | None:
        row = self._store.fetchone(
            f"SELECT {ENTRY_COLUMNS} FROM requests WHERE {KEY}", (partition, job_key, endpoint)
        )
        if row is None:
            return None
        rows = json.loads(row[4]) if row[4] else None
        for record in rows or []:
            record["created_at"] = datetime.fromisoformat(record["created_at"])
        payload = json.loads(row[7]) if row[7] else None
        return LedgerEntry(row[0], row[1], row[2], row[3], rows, row[5], row[6], payload, row[8], row[9])

    def claim(self, partition: str, job_key: str, endpoint: str, owner: str, lease_seconds: float) -> bool:
        """Whether `owner` now owns the row (creating it as `planned` if it is new)."""
        now = time.time()
        if self._store.execute(
            "INSERT INTO requests (partition, job_key, endpoint, fingerprint, state, updated_at, owner, "
            "lease_until) VALUES (?, ?, ?, '', 'planned', ?, ?, ?) "
            "ON CONFLICT (partition, job_key, endpoint) DO NOTHING",
            (partition, job_key, endpoint, now, owner, now + lease_seconds),
        ):
            return True
        return bool(
            self._store.execute(
                f"UPDATE requests SET owner=?, lease_until=? WHERE {KEY} "
                "AND (owner IS NULL OR owner=? OR lease_until IS NULL OR lease_until < ?)",
                (owner, now + lease_seconds, partition, job_key, endpoint, owner, now),
            )
        )

    def renew(self, owner: str, lease_seconds: float) -> None:
        self._store.execute(
            "UPDATE requests SET lease_until=? WHERE owner=?", (time.time() + lease_seconds, owner)
        )

    def release(self, owner: str) -> None:
        """Give up every row `owner` still holds (the run is done with them)."""
        self._store.execute("UPDATE requests SET owner=NULL, lease_until=NULL WHERE owner=?", (owner,))

    def submitting(
        self,
        partition: str,
        job_key: str,
        endpoint: str,
        fingerprint_: str,
        *,
        backend: str | None = None,
        payload: dict | None = None,
        run_id: str | None = None,
        backfill_id: str | None = None,
    ) -> str:
        token = uuid.uuid4().hex
        now = time.time()
        self._store.execute(
            "INSERT INTO requests (partition, job_key, endpoint, fingerprint, state, token, updated_at, "
            "backend, payload_json, submitted_at, run_id, backfill_id) "
            "VALUES (?, ?, ?, ?, 'submitting', ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (partition, job_key, endpoint) DO UPDATE SET fingerprint=excluded.fingerprint, "
            "state='submitting', token=excluded.token, request_id=NULL, rows_json=NULL, error=NULL, "
            "updated_at=excluded.updated_at, backend=excluded.backend, payload_json=excluded.payload_json, "
            "submitted_at=excluded.submitted_at, run_id=excluded.run_id, backfill_id=excluded.backfill_id, "
            "billing_unit=NULL, billed_units=NULL, unit_price=NULL, price_source=NULL, cost_usd=NULL, "
            "billed_at=NULL, spent_run_id=NULL",
            (partition, job_key, endpoint, fingerprint_, token, now, backend,
             json.dumps(payload) if payload is not None else None, now, run_id, backfill_id),
        )  # fmt: skip
        return token

    def submitted(self, partition: str, job_key: str, endpoint: str, request_id: str) -> None:
        self._store.execute(
            f"UPDATE requests SET state='submitted', request_id=?, updated_at=? WHERE {KEY}",
            (request_id, time.time(), partition, job_key, endpoint),
        )

    def billed(self, partition: str, job_key: str, endpoint: str, billing: Billing) -> None:
        """Record what fal billed for the row's request (once)."""
        self._store.execute(
            "UPDATE requests SET billing_unit=?, billed_units=?, unit_price=?, price_source=?, cost_usd=?, "
            f"billed_megapixels=?, billed_at=? WHERE {KEY} AND billed_at IS NULL",
            (billing.unit, billing.units, billing.unit_price, billing.price_source, billing.cost_usd,
             billing.megapixels, time.time(), partition, job_key, endpoint),
        )  # fmt: skip

    def report_spend(self, partition: str, endpoint: str, run_id: str) -> tuple[float, int]:
        """Claim, for `run_id`'s materialization, every billed request of the partition and
        endpoint no materialization has reported yet (a crashed run's too); (USD, megapixels)
        of all it reported. Each request is reported exactly once, whatever runs at once."""
        self._store.execute(
            "UPDATE requests SET spent_run_id=? WHERE partition=? AND endpoint=? AND billed_at IS NOT NULL "
            "AND spent_run_id IS NULL",
            (run_id, partition, endpoint),
        )
        cost, megapixels = self._store.fetchone(
            "SELECT SUM(cost_usd), SUM(billed_megapixels) FROM requests WHERE partition=? AND endpoint=? "
            "AND spent_run_id=?",
            (partition, endpoint, run_id),
        )
        return round(cost or 0.0, 6), int(megapixels or 0)

    def stored(self, partition: str, job_key: str, endpoint: str, request_id: str, rows: list[dict]) -> None:
        self._store.execute(
            "UPDATE requests SET state='stored', request_id=?, rows_json=?, error=NULL, updated_at=?, "
            f"owner=NULL, lease_until=NULL WHERE {KEY}",
            (request_id, json.dumps(rows, default=_isoformat), time.time(), partition, job_key, endpoint),
        )

    def failed(self, partition: str, job_key: str, endpoint: str, error: str) -> None:
        """A request that ended without usable files; a re-run may send it again."""
        self._store.execute(
            "UPDATE requests SET state='failed', error=?, updated_at=?, owner=NULL, lease_until=NULL "
            f"WHERE {KEY}",
            (error, time.time(), partition, job_key, endpoint),
        )

    def known_request_ids(self, endpoint: str) -> set[str]:
        rows = self._store.fetchall(
            "SELECT request_id FROM requests WHERE endpoint=? AND request_id IS NOT NULL", (endpoint,)
        )
        return {row[0] for row in rows}

    def requests(self, partition: str | None = None) -> list[tuple]:
        """Every request of the ledger (or of one partition) that was ever submitted, as
        REQUEST_COLUMNS."""
        where = "submitted_at IS NOT NULL" + (" AND partition=?" if partition is not None else "")
        columns = ", ".join(c if c != "prompt_id" else "job_key" for c in REQUEST_COLUMNS)
        return self._store.fetchall(
            f"SELECT {columns} FROM requests WHERE {where}", (partition,) if partition else ()
        )

    def record_webhook(self, token: str, request_id: str, status: str | None) -> None:
        self._store.execute(
            "INSERT INTO webhooks (token, request_id, status, received_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (token) DO NOTHING",
            (token, request_id, status, time.time()),
        )

    def webhook_request_id(self, token: str) -> str | None:
        row = self._store.fetchone("SELECT request_id FROM webhooks WHERE token=?", (token,))
        return row[0] if row else None


@dataclass(frozen=True)
class RunContext:
    """Who works on a partition: the run (owner of its claims) and its backfill, on which backend."""

    run_id: str
    backend: str
    backfill_id: str | None = None
    lease_seconds: float = 120.0
    lost_wait: float = 120.0
    """Seconds to wait for a lost submit's webhook."""


class PartitionLedger:
    """One run's view of one partition's requests."""

    def __init__(self, ledger: RequestLedger, partition: str, run: RunContext):
        self.ledger, self.partition, self.run = ledger, partition, run
        self._waiters: dict[str, asyncio.Future] = {}
        self._lock = threading.Lock()

    def _key(self, job: GenerationJob) -> tuple[str, str, str]:
        return self.partition, job.prompt_id, job.endpoint

    def entry(self, job: GenerationJob) -> LedgerEntry | None:
        return self.ledger.entry(*self._key(job))

    def claim(self, job: GenerationJob) -> bool:
        return self.ledger.claim(*self._key(job), self.run.run_id, self.run.lease_seconds)

    def renew(self) -> None:
        self.ledger.renew(self.run.run_id, self.run.lease_seconds)

    def release(self) -> None:
        self.ledger.release(self.run.run_id)

    def submitting(self, job: GenerationJob, payload: dict) -> str:
        run = self.run
        return self.ledger.submitting(
            *self._key(job),
            job.fingerprint,
            backend=run.backend,
            payload=payload,
            run_id=run.run_id,
            backfill_id=run.backfill_id,
        )

    def submitted(self, job: GenerationJob, request_id: str) -> None:
        self.ledger.submitted(*self._key(job), request_id)

    def billed(self, job: GenerationJob, billing: Billing) -> None:
        self.ledger.billed(*self._key(job), billing)

    def stored(self, job: GenerationJob, request_id: str, rows: list[dict]) -> None:
        self.ledger.stored(*self._key(job), request_id, rows)

    def failed(self, job: GenerationJob, error: str) -> None:
        self.ledger.failed(*self._key(job), error)

    def known_request_ids(self, endpoint: str) -> set[str]:
        return self.ledger.known_request_ids(endpoint)

    async def find_lost(self, job: GenerationJob, token: str) -> str | None:
        """The request id fal's webhook reported for the submit attempt `token`: already in the
        ledger (received by an earlier run), or delivered within `lost_wait` seconds."""
        arrival = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[token] = arrival  # before looking, so a delivery in between is not missed
        try:
            if found := await asyncio.to_thread(self.ledger.webhook_request_id, token):
                return found
            return await asyncio.wait_for(arrival, self.run.lost_wait)
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
