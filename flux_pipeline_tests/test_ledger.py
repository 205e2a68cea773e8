"""The request ledger on both of its stores, a real SQLite file and a real PostgreSQL database,
shared by concurrent processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flux_pipeline.dataset.money.ledger import RequestKey, RequestLedger, fingerprint


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


def _open_connections(location: str) -> int:
    """Connections to the ledger's database: this process's open descriptors of the SQLite file,
    or the server's sessions on the PostgreSQL database."""
    if "://" not in location:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(location))
    import psycopg2

    probe = psycopg2.connect(location.replace("postgresql+psycopg2://", "postgresql://"))
    with closing(probe), probe.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname=current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _write_from_threads(ledger: RequestLedger, names: range) -> None:
    for n in names:
        thread = threading.Thread(target=ledger.submitting, args=(RequestKey("p", f"t{n}", "e"), "fp"))
        thread.start()
        thread.join()


def test_connections_are_kept_per_thread_and_never_shared_with_a_forked_child(location):
    ledger = RequestLedger(location)
    ledger.submitting(RequestKey("p", "main", "e"), "fp")
    _write_from_threads(ledger, range(4))
    open_after_4 = _open_connections(location)
    _write_from_threads(ledger, range(4, 32))
    # each thread's connection went with it: the main thread's is kept (SQLite keeps one more
    # descriptor open while another connection of the process holds locks on the file)
    assert _open_connections(location) == open_after_4 <= 2

    child = multiprocessing.get_context("fork").Process(
        target=ledger.submitted, args=(RequestKey("p", "main", "e"), "rid-child")
    )
    child.start()
    child.join()
    assert child.exitcode == 0
    # the parent's connection outlived the child, and sees what the child wrote on its own
    assert ledger.entry(RequestKey("p", "main", "e")).request_id == "rid-child"
    ledger.submitted(RequestKey("p", "t0", "e"), "rid-parent")
    states = [ledger.entry(RequestKey("p", f"t{n}", "e")).state for n in range(2)]
    assert states == ["submitted", "submitting"]
    ledger.close()
    assert _open_connections(location) == 0
    assert ledger.entry(RequestKey("p", "t0", "e")).request_id == "rid-parent"  # reopens
    ledger.close()


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
