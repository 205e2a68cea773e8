"""The request ledger on both of its stores, a real SQLite file and a real PostgreSQL database,
shared by concurrent processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest

from flux_pipeline.dataset.ledger import RequestKey, RequestLedger, fingerprint


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    return request.getfixturevalue("postgres_url")


def _record(args: tuple[str, int]) -> int:
    location, worker = args
    with RequestLedger(location) as ledger:
        for n in range(40):
            ledger.submitting(RequestKey("p", f"{worker}-{n}", "e"), "fp")
            ledger.submitted(RequestKey("p", f"{worker}-{n}", "e"), f"rid-{worker}-{n}")
    return worker


def test_processes_opening_and_writing_the_ledger_at_once(location):
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        assert sorted(pool.map(_record, [(location, w) for w in range(6)])) == list(range(6))
    ledger = RequestLedger(location)
    entries = [ledger.entry(RequestKey("p", f"{w}-{n}", "e")) for w in range(6) for n in range(40)]
    assert all(e.state == "submitted" and e.request_id for e in entries)
    assert len({e.request_id for e in entries}) == 240


def test_lifecycle_and_webhooks(location):
    ledger = RequestLedger(location)
    fp = fingerprint("e", {"prompt": "x", "seed": 1})
    assert fp == fingerprint("e", {"seed": 1, "prompt": "x"}) != fingerprint("e", {"prompt": "x", "seed": 2})
    token = ledger.submitting(RequestKey("p", "k", "e"), fp)
    assert (
        ledger.entry(RequestKey("p", "k", "e")).state == "submitting"
        and ledger.webhook_request_id(token) is None
    )
    ledger.record_webhook(token, "rid-1", "OK")
    ledger.record_webhook(token, "rid-1", "OK")  # fal may deliver twice
    assert ledger.webhook_request_id(token) == "rid-1"
    created = datetime(2026, 1, 2, tzinfo=UTC)
    ledger.stored(RequestKey("p", "k", "e"), "rid-1", [{"image_id": "a", "created_at": created}])
    entry = ledger.entry(RequestKey("p", "k", "e"))
    assert (entry.state, entry.request_id, entry.rows) == (
        "stored",
        "rid-1",
        [{"image_id": "a", "created_at": created}],
    )
    again = ledger.submitting(RequestKey("p", "k", "e"), fingerprint("e", {"prompt": "changed"}))
    assert again != token and ledger.entry(RequestKey("p", "k", "e")).rows is None
