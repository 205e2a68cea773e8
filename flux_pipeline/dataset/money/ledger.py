"""The request ledger: what was asked of fal for each (partition, prompt_id, endpoint), durably,
so that nothing is paid for twice across retries, crashes, re-runs and concurrent runs.

It is kept in a SQLite file beside the catalog, or in PostgreSQL when runs execute on several
machines (ledger_stores); each write commits before the call returns. A row moves
planned (claimed, nothing sent) → submitting (intent and exact payload recorded, token for the
webhook) → submitted (fal's request id) → stored (the catalog rows of its files), or → failed (fal
billed nothing: a re-run may send it again), or → unusable (fal completed and billed it, but its
answer cannot be cataloged: final, so a re-run does not pay for it again unless it is asked to).
A billed request that a new submit replaces (a row paid again, or edited) is kept in
`superseded_requests`, so the ledger holds every request fal billed.
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
run's spend is reported by the next, and every request's cost is counted exactly once). A claim
whose run died before its materialization was written is orphaned: the next run that finds it so
(the caller asks Dagster) claims it again; one found materialized is confirmed and never asked of
again.

`RunLedger` is one run's view of a partition, as the fal batch runner records submits
(fal.types.Ledger): a lost submit's webhook wakes its waiter directly, without polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ...fal.types import GenerationRequest, WebhookConflict
from .ledger_stores import LedgerSchema, open_store

UNUSABLE = "unusable"
SPENDING_TABLES = ("requests", "superseded_requests")
BILLING_COLUMNS = {
    "billing_unit": "TEXT",
    "billed_units": "DOUBLE PRECISION",
    "unit_price": "DOUBLE PRECISION",
    "price_source": "TEXT",
    "cost_usd": "DOUBLE PRECISION",
    "billed_megapixels": "DOUBLE PRECISION",
    "billed_at": "DOUBLE PRECISION",
    "spent_run_id": "TEXT",
    "spent_claimed_at": "DOUBLE PRECISION",
    "spent_confirmed_at": "DOUBLE PRECISION",
    "paid": "INTEGER",
}
"""What fal billed for a request, and which materialization reported it; `paid` is 1 when a paying
backend billed it, 0 when the emulator did (its list prices: nothing was paid)."""
PAID_BEFORE_IT_WAS_RECORDED = (
    "CASE WHEN billed_at IS NULL THEN NULL WHEN backend='emulator' THEN 0 ELSE 1 END"
)
"""`paid` of a request billed before the ledger recorded it: the embedded emulator's backend name
says so (one reached through FAL_QUEUE_URL then had a host's name, and counts as paid)."""
UNBILLED = ", ".join(f"{column}=NULL" for column in BILLING_COLUMNS)
"""A new submit's billing: none yet."""
SUPERSEDED_COLUMNS = {
    "state": "TEXT NOT NULL",
    "backend": "TEXT",
    "run_id": "TEXT",
    "backfill_id": "TEXT",
    "submitted_at": "DOUBLE PRECISION",
    **BILLING_COLUMNS,
    "error": "TEXT",
}
"""What `superseded_requests` keeps of a billed request besides its key and request id."""
LEDGER_SCHEMA = LedgerSchema(
    tables=[
        """CREATE TABLE IF NOT EXISTS requests (
        partition TEXT NOT NULL, prompt_id TEXT NOT NULL, endpoint TEXT NOT NULL,
        fingerprint TEXT NOT NULL, state TEXT NOT NULL, token TEXT, request_id TEXT,
        rows_json TEXT, error TEXT, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (partition, prompt_id, endpoint))""",
        f"""CREATE TABLE IF NOT EXISTS superseded_requests (
        partition TEXT NOT NULL, prompt_id TEXT NOT NULL, endpoint TEXT NOT NULL, request_id TEXT NOT NULL,
        {", ".join(f"{column} {kind}" for column, kind in SUPERSEDED_COLUMNS.items())},
        PRIMARY KEY (partition, prompt_id, endpoint, request_id))""",
        """CREATE TABLE IF NOT EXISTS webhooks (
        token TEXT PRIMARY KEY, request_id TEXT NOT NULL, status TEXT,
        received_at DOUBLE PRECISION NOT NULL)""",
        # a webhook delivery is checked against every row's request id and token
        "CREATE INDEX IF NOT EXISTS requests_by_request_id ON requests (request_id)",
        "CREATE INDEX IF NOT EXISTS requests_by_token ON requests (token)",
        "CREATE INDEX IF NOT EXISTS webhooks_by_request_id ON webhooks (request_id)",
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
            **BILLING_COLUMNS,
            "error_field": "TEXT",
        },
        "superseded_requests": {"paid": BILLING_COLUMNS["paid"]},
    },
    renamed_columns={"requests": {"job_key": "prompt_id"}, "superseded_requests": {"job_key": "prompt_id"}},
    filled_columns={
        "requests": {"paid": PAID_BEFORE_IT_WAS_RECORDED},
        "superseded_requests": {"paid": PAID_BEFORE_IT_WAS_RECORDED},
    },
)
KEY = "partition=? AND prompt_id=? AND endpoint=?"
ENTRY_COLUMNS = (
    "fingerprint, state, token, request_id, rows_json, updated_at, backend, payload_json, submitted_at, "
    "owner, error, error_field, billed_at"
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
    "paid",
    "superseded",
]
"""The columns of `RequestLedger.requests()`: the audit view of every request (`paid`: 1 when a
paying backend billed it, 0 when the emulator did; `superseded`: a billed request that a later
submit for the same row replaced)."""


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
    error: str | None = None
    error_field: str | None = None
    """The field of fal's answer that made it unusable."""
    billed_at: float | None = None

    @property
    def resumable(self) -> bool:
        """fal holds the request and its result (fetching them is free): submitted, stored, or
        billed and failed (as a ledger written before `unusable` existed recorded an unusable one)."""
        billed_failure = self.state == "failed" and self.billed_at is not None
        return bool(self.request_id) and (self.state in ("submitted", "stored") or billed_failure)


@dataclass(frozen=True)
class Billing:
    """What fal billed for one request."""

    unit: str
    units: float
    unit_price: float
    price_source: str
    cost_usd: float
    megapixels: int
    paid: bool = True
    """A paying backend billed it; False: the emulator (list prices, nothing paid)."""


@dataclass(frozen=True)
class Spend:
    """What fal billed, apart: `paid` by a paying backend, `emulated` by the emulator at list prices."""

    paid_usd: float = 0.0
    emulated_usd: float = 0.0
    paid_megapixels: int = 0
    emulated_megapixels: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            round(self.paid_usd + other.paid_usd, 6),
            round(self.emulated_usd + other.emulated_usd, 6),
            self.paid_megapixels + other.paid_megapixels,
            self.emulated_megapixels + other.emulated_megapixels,
        )


@dataclass(frozen=True)
class RequestKey:
    """A row of the ledger: the request one prompt table row asks of one endpoint, in a partition."""

    partition: str
    prompt_id: str
    endpoint: str

    @classmethod
    def of(cls, partition: str, request: GenerationRequest) -> RequestKey:
        return cls(partition, request.prompt_id, request.endpoint)

    @property
    def params(self) -> tuple[str, str, str]:
        """The values of KEY's placeholders."""
        return self.partition, self.prompt_id, self.endpoint


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

    def entry(self, key: RequestKey) -> LedgerEntry | None:
        row = self._store.fetchone(f"SELECT {ENTRY_COLUMNS} FROM requests WHERE {KEY}", key.params)
        return None if row is None else _entry(row)

    def entries(self, partition: str) -> Callable[[GenerationRequest], LedgerEntry | None]:
        """Every entry of `partition` as it stands now, read in one query, looked up by request."""
        found = {
            RequestKey(partition, row[0], row[1]): _entry(row[2:])
            for row in self._store.fetchall(
                f"SELECT prompt_id, endpoint, {ENTRY_COLUMNS} FROM requests WHERE partition=?", (partition,)
            )
        }
        return lambda request: found.get(RequestKey.of(partition, request))

    def claim(self, key: RequestKey, owner: str, lease_seconds: float) -> bool:
        """Whether `owner` now owns the row (creating it as `planned` if it is new)."""
        now = time.time()
        if self._store.execute(
            "INSERT INTO requests (partition, prompt_id, endpoint, fingerprint, state, updated_at, owner, "
            "lease_until) VALUES (?, ?, ?, '', 'planned', ?, ?, ?) "
            "ON CONFLICT (partition, prompt_id, endpoint) DO NOTHING",
            (*key.params, now, owner, now + lease_seconds),
        ):
            return True
        return bool(
            self._store.execute(
                f"UPDATE requests SET owner=?, lease_until=? WHERE {KEY} "
                "AND (owner IS NULL OR owner=? OR lease_until IS NULL OR lease_until < ?)",
                (owner, now + lease_seconds, *key.params, owner, now),
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
        key: RequestKey,
        fingerprint_: str,
        *,
        backend: str | None = None,
        payload: dict | None = None,
        run_id: str | None = None,
        backfill_id: str | None = None,
    ) -> str:
        token = uuid.uuid4().hex
        now = time.time()
        self._supersede(key)
        self._store.execute(
            "INSERT INTO requests (partition, prompt_id, endpoint, fingerprint, state, token, updated_at, "
            "backend, payload_json, submitted_at, run_id, backfill_id) "
            "VALUES (?, ?, ?, ?, 'submitting', ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (partition, prompt_id, endpoint) DO UPDATE SET fingerprint=excluded.fingerprint, "
            "state='submitting', token=excluded.token, request_id=NULL, rows_json=NULL, error=NULL, "
            "error_field=NULL, updated_at=excluded.updated_at, backend=excluded.backend, "
            "payload_json=excluded.payload_json, submitted_at=excluded.submitted_at, run_id=excluded.run_id, "
            f"backfill_id=excluded.backfill_id, {UNBILLED}",
            (*key.params, fingerprint_, token, now, backend,
             json.dumps(payload) if payload is not None else None, now, run_id, backfill_id),
        )  # fmt: skip
        return token

    def _supersede(self, key: RequestKey) -> None:
        """Keep the row's billed request, if it has one, before a new submit replaces it (once, so
        a crash before the submit is recorded keeps one copy)."""
        columns = ", ".join(["partition", "prompt_id", "endpoint", "request_id", *SUPERSEDED_COLUMNS])
        self._store.execute(
            f"INSERT INTO superseded_requests ({columns}) SELECT {columns} FROM requests WHERE {KEY} "
            "AND billed_at IS NOT NULL AND request_id IS NOT NULL ON CONFLICT DO NOTHING",
            key.params,
        )

    def submitted(self, key: RequestKey, request_id: str) -> None:
        self._store.execute(
            f"UPDATE requests SET state='submitted', request_id=?, updated_at=? WHERE {KEY}",
            (request_id, time.time(), *key.params),
        )

    def billed(self, key: RequestKey, billing: Billing) -> None:
        """Record what fal billed for the row's request (once)."""
        self._store.execute(
            "UPDATE requests SET billing_unit=?, billed_units=?, unit_price=?, price_source=?, cost_usd=?, "
            f"billed_megapixels=?, paid=?, billed_at=? WHERE {KEY} AND billed_at IS NULL",
            (billing.unit, billing.units, billing.unit_price, billing.price_source, billing.cost_usd,
             billing.megapixels, int(billing.paid), time.time(), *key.params),
        )  # fmt: skip

    def report_spend(
        self, partition: str, endpoint: str, run_id: str, orphaned_runs: Collection[str] = ()
    ) -> Spend:
        """Claim, for `run_id`'s materialization, every billed request of the partition and
        endpoint no materialization has reported yet (a crashed run's too, superseded ones
        included, and those claimed by `orphaned_runs`, which died before materializing); the
        Spend of all it reported. Each request is reported exactly once, whatever runs at once."""
        orphans = tuple(orphaned_runs)
        unclaimed = "spent_run_id IS NULL" + (
            f" OR (spent_run_id IN ({', '.join('?' * len(orphans))}) AND spent_confirmed_at IS NULL)"
            if orphans
            else ""
        )
        spend = Spend()
        for table in SPENDING_TABLES:
            self._store.execute(
                f"UPDATE {table} SET spent_run_id=?, spent_claimed_at=? WHERE partition=? AND endpoint=? "
                f"AND billed_at IS NOT NULL AND ({unclaimed})",
                (run_id, time.time(), partition, endpoint, *orphans),
            )
            for paid, cost, megapixels in self._store.fetchall(
                f"SELECT paid, COALESCE(SUM(cost_usd), 0), COALESCE(SUM(billed_megapixels), 0) FROM {table} "
                "WHERE partition=? AND endpoint=? AND spent_run_id=? GROUP BY paid",
                (partition, endpoint, run_id),
            ):
                if paid == 0:
                    spend += Spend(emulated_usd=cost, emulated_megapixels=int(megapixels))
                else:
                    spend += Spend(paid_usd=cost, paid_megapixels=int(megapixels))
        return spend

    def unconfirmed_spend_claims(self, partition: str, endpoint: str, run_id: str) -> dict[str, float]:
        """run → when it last claimed spend of the partition's endpoint, for the runs other than
        `run_id` not yet confirmed to have materialized that claim (0 for a claim of unknown time)."""
        claims: dict[str, float] = {}
        for table in SPENDING_TABLES:
            for run, claimed_at in self._store.fetchall(
                f"SELECT spent_run_id, MAX(spent_claimed_at) FROM {table} WHERE partition=? AND endpoint=? "
                "AND spent_run_id IS NOT NULL AND spent_run_id<>? AND spent_confirmed_at IS NULL "
                "GROUP BY spent_run_id",
                (partition, endpoint, run_id),
            ):
                claims[run] = max(claims.get(run, 0.0), claimed_at or 0.0)
        return claims

    def confirm_spend(self, partition: str, endpoint: str, run_id: str) -> None:
        """`run_id`'s materialization reported its claims on the partition's endpoint."""
        for table in SPENDING_TABLES:
            self._store.execute(
                f"UPDATE {table} SET spent_confirmed_at=? WHERE partition=? AND endpoint=? "
                "AND spent_run_id=? AND spent_confirmed_at IS NULL",
                (time.time(), partition, endpoint, run_id),
            )

    def stored(self, key: RequestKey, request_id: str, rows: list[dict]) -> None:
        self._store.execute(
            "UPDATE requests SET state='stored', request_id=?, rows_json=?, error=NULL, updated_at=?, "
            f"owner=NULL, lease_until=NULL WHERE {KEY}",
            (request_id, json.dumps(rows, default=_isoformat), time.time(), *key.params),
        )

    def unusable(self, key: RequestKey, field: str, error: str) -> None:
        """fal completed and billed the request, but `field` of its answer cannot be cataloged."""
        self._store.execute(
            f"UPDATE requests SET state='{UNUSABLE}', error=?, error_field=?, updated_at=?, owner=NULL, "
            f"lease_until=NULL WHERE {KEY}",
            (error, field, time.time(), *key.params),
        )

    def failed(self, key: RequestKey, error: str) -> None:
        """A request that ended without files and that fal did not bill; a re-run may send it again."""
        self._store.execute(
            "UPDATE requests SET state='failed', error=?, updated_at=?, owner=NULL, lease_until=NULL "
            f"WHERE {KEY}",
            (error, time.time(), *key.params),
        )

    def known_request_ids(self, endpoint: str) -> set[str]:
        rows = self._store.fetchall(
            "SELECT request_id FROM requests WHERE endpoint=? AND request_id IS NOT NULL", (endpoint,)
        )
        return {row[0] for row in rows}

    def requests(self, partition: str | None = None) -> list[tuple]:
        """Every request of the ledger (or of one partition) that was ever submitted, superseded
        ones included, as REQUEST_COLUMNS."""
        where = "submitted_at IS NOT NULL" + (" AND partition=?" if partition is not None else "")
        columns = ", ".join(c for c in REQUEST_COLUMNS if c != "superseded")
        params = (partition,) if partition is not None else ()
        return self._store.fetchall(
            f"SELECT {columns}, 0 FROM requests WHERE {where} "
            f"UNION ALL SELECT {columns}, 1 FROM superseded_requests WHERE {where}",
            params * 2,
        )

    def record_webhook(self, token: str, request_id: str, status: str | None) -> bool:
        """Record fal's delivery of `request_id` for the submit attempt `token` (again: a no-op);
        False, recording nothing, when the request is another attempt's: another row's request, one
        delivered for another token, or not the request the token's row already holds."""
        self._store.execute(
            "INSERT INTO webhooks (token, request_id, status, received_at) SELECT ?, ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM requests WHERE request_id=? AND (token IS NULL OR token<>?)) "
            "AND NOT EXISTS (SELECT 1 FROM requests WHERE token=? AND request_id<>?) "
            "AND NOT EXISTS (SELECT 1 FROM webhooks WHERE request_id=? AND token<>?) "
            "ON CONFLICT (token) DO NOTHING",
            (token, request_id, status, time.time(), request_id, token, token, request_id, request_id, token),
        )
        return self.webhook_request_id(token) == request_id

    def webhook_request_id(self, token: str) -> str | None:
        row = self._store.fetchone("SELECT request_id FROM webhooks WHERE token=?", (token,))
        return row[0] if row else None


def _entry(row: tuple) -> LedgerEntry:
    """The LedgerEntry of a row of ENTRY_COLUMNS."""
    rows = json.loads(row[4]) if row[4] else None
    for record in rows or []:
        record["created_at"] = datetime.fromisoformat(record["created_at"])
    payload = json.loads(row[7]) if row[7] else None
    return LedgerEntry(row[0], row[1], row[2], row[3], rows, row[5], row[6], payload, *row[8:])


@dataclass(frozen=True)
class RunContext:
    """Who works on a partition: the run (owner of its claims) and its backfill, on which backend."""

    run_id: str
    backend: str
    backfill_id: str | None = None
    lease_seconds: float = 120.0
    lost_wait: float = 120.0
    """Seconds to wait for a lost submit's webhook."""


class RunLedger:
    """One run's claims and submits on one partition: what the batch runner records through
    (fal.types.Ledger), and the leases of the rows the run holds. Rows are read and written
    through `ledger` by their `key`."""

    def __init__(self, ledger: RequestLedger, partition: str, run: RunContext):
        self.ledger, self.partition, self.run = ledger, partition, run
        self._waiters: dict[str, asyncio.Future] = {}
        self._lock = threading.Lock()

    def key(self, request: GenerationRequest) -> RequestKey:
        return RequestKey.of(self.partition, request)

    def claim(self, request: GenerationRequest) -> bool:
        return self.ledger.claim(self.key(request), self.run.run_id, self.run.lease_seconds)

    def renew(self) -> None:
        self.ledger.renew(self.run.run_id, self.run.lease_seconds)

    def release(self) -> None:
        self.ledger.release(self.run.run_id)

    def submitting(self, request: GenerationRequest, payload: dict) -> str:
        run = self.run
        return self.ledger.submitting(
            self.key(request),
            request.fingerprint,
            backend=run.backend,
            payload=payload,
            run_id=run.run_id,
            backfill_id=run.backfill_id,
        )

    def submitted(self, request: GenerationRequest, request_id: str) -> None:
        self.ledger.submitted(self.key(request), request_id)

    def known_request_ids(self, endpoint: str) -> set[str]:
        return self.ledger.known_request_ids(endpoint)

    async def find_lost(self, request: GenerationRequest, token: str) -> str | None:
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
        """Called by the webhook receiver's thread (fal may deliver more than once); a delivery
        whose request is another submit attempt's raises WebhookConflict and wakes no one."""
        if not self.ledger.record_webhook(token, body["request_id"], body.get("status")):
            raise WebhookConflict(
                f"request {body['request_id']} is another submit attempt's than {token}'s: not recorded"
            )
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
