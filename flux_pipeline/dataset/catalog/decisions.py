"""Reviewers' decisions on catalog images: an append-only log in the ledger's database (the
`review_decisions` table, SQLite or PostgreSQL through ledger_stores), one row per decision:
who, when, partition, image_id, decision, reason.

Why the database and not files: every decision is one INSERT that commits before the call returns,
so two reviewers deciding at once both land (no read-modify-write of a shared file), a crash
mid-write leaves the row either committed or absent (no torn file), and it works the same when the
dataset itself is on object storage (the deployment's PostgreSQL ledger). Nothing is ever updated
or deleted: the latest decision on an image wins, and `undecided` (what undo records) clears it.

`DecisionLog.frame(partition)` is the log as a pandas DataFrame; the `review_decisions` Dagster
asset snapshots it to Parquet."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..money.ledger_stores import LedgerSchema, open_store

KEEP, REJECT, UNDECIDED = "keep", "reject", "undecided"
DECISIONS = (KEEP, REJECT, UNDECIDED)
MAX_REASON = 200
COLUMNS = ["decision_id", "decided_at", "reviewer", "partition", "image_id", "decision", "reason"]

DECISIONS_SCHEMA = LedgerSchema(
    tables=[
        """CREATE TABLE IF NOT EXISTS review_decisions (
        decision_id TEXT PRIMARY KEY, decided_at TEXT NOT NULL, reviewer TEXT NOT NULL,
        partition TEXT NOT NULL, image_id TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT)""",
        "CREATE INDEX IF NOT EXISTS review_decisions_partition ON review_decisions (partition, decided_at)",
    ]
)


class DecisionError(ValueError):
    """A decision that cannot be recorded; the message names the field."""


def check_decision(decision: str, reason: str | None, reviewer: str) -> None:
    if decision not in DECISIONS:
        raise DecisionError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if reason is not None and len(reason) > MAX_REASON:
        raise DecisionError(f"reason is {len(reason)} characters long, over {MAX_REASON}")
    if not reviewer or len(reviewer) > MAX_REASON:
        raise DecisionError(f"reviewer {reviewer!r} must be 1 to {MAX_REASON} characters")


class DecisionLog:
    """`location`: the ledger's (a SQLite file or a postgresql:// URL)."""

    def __init__(self, location: str | Path):
        self._store = open_store(location, DECISIONS_SCHEMA)

    def record(
        self, partition: str, image_id: str, decision: str, reviewer: str, reason: str | None = None
    ) -> dict:
        """Appends one decision (committed on return) and returns it. The caller checks that the
        image is in the partition."""
        reason = (reason or "").strip() or None
        check_decision(decision, reason, reviewer)
        entry = {
            "decision_id": uuid.uuid4().hex,
            "decided_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "reviewer": reviewer,
            "partition": partition,
            "image_id": image_id,
            "decision": decision,
            "reason": reason,
        }
        self._store.execute(
            f"INSERT INTO review_decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            tuple(entry[column] for column in COLUMNS),
        )
        return entry

    def entries(self, partition: str) -> list[dict]:
        """The partition's decisions, oldest first (ties broken by id, the same on every reader)."""
        rows = self._store.fetchall(
            f"SELECT {', '.join(COLUMNS)} FROM review_decisions WHERE partition = ? "
            "ORDER BY decided_at, decision_id",
            (partition,),
        )
        return [dict(zip(COLUMNS, row)) for row in rows]

    def frame(self, partition: str) -> pd.DataFrame:
        frame = pd.DataFrame(self.entries(partition), columns=COLUMNS)
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True, format="ISO8601")
        return frame

    def latest(self, partition: str) -> dict[str, dict]:
        """image_id → its latest decision (images whose latest is `undecided` left out)."""
        latest = {entry["image_id"]: entry for entry in self.entries(partition)}
        return {image: entry for image, entry in latest.items() if entry["decision"] != UNDECIDED}

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decisions_version(entries: list[dict]) -> str:
    """A hash of the decisions in force (image → decision, reason): it changes when a decision
    changes, not when one is recorded again unchanged."""
    latest = {entry["image_id"]: (entry["decision"], entry["reason"] or "") for entry in entries}
    in_force = sorted((image, *value) for image, value in latest.items() if value[0] != UNDECIDED)
    return hashlib.sha256(repr(in_force).encode()).hexdigest()


def decision_counts(entries: list[dict], catalog_ids: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """({kept, rejected, undecided} among the catalog's images, {reason: rejected images})."""
    latest = {entry["image_id"]: entry for entry in entries if entry["image_id"] in catalog_ids}
    decided = Counter(entry["decision"] for entry in latest.values())
    reasons = Counter(entry["reason"] or "(none)" for entry in latest.values() if entry["decision"] == REJECT)
    counts = {
        "kept": decided[KEEP],
        "rejected": decided[REJECT],
        "undecided": len(catalog_ids) - decided[KEEP] - decided[REJECT],
    }
    return counts, dict(sorted(reasons.items()))
