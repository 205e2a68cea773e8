"""A ledger written before its key column was renamed (`job_key`, now `prompt_id`) opens in place,
on SQLite and PostgreSQL alike, and a re-run of its partitions sends nothing."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import dagster as dg
import pytest

from flux_pipeline.dataset.money.ledger import RequestLedger

from .dataset_fixtures import make_project

OLD_KEY, NEW_KEY = "job_key", "prompt_id"
KEYED_TABLES = ("requests", "superseded_requests")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    return request.getfixturevalue("postgres_url")


def _run(location: str, statements: list[str]) -> list[tuple]:
    """The rows of the last statement, run on the ledger's database directly (no migration)."""
    if location.startswith("postgresql"):
        import psycopg2

        with closing(psycopg2.connect(location.replace("postgresql+psycopg2://", "postgresql://"))) as db:
            db.autocommit = True
            with db.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
    with closing(sqlite3.connect(location, isolation_level=None)) as db:
        rows: list[tuple] = []
        for statement in statements:
            rows = db.execute(statement).fetchall()
        return rows


def _columns(location: str, table: str) -> set[str]:
    if location.startswith("postgresql"):
        query = f"SELECT column_name FROM information_schema.columns WHERE table_name='{table}'"
        return {row[0] for row in _run(location, [query])}
    return {row[1] for row in _run(location, [f"PRAGMA table_info({table})"])}


def test_a_ledger_keyed_by_job_key_is_migrated_in_place_and_its_partition_is_not_paid_again(
    tmp_path, emulator, ledger_location
):
    with dg.instance_for_test() as instance:
        project = make_project(tmp_path, emulator, instance).with_settings(ledger=ledger_location)
        assert project.run("animals").success
        billed = emulator.emulator.stats()["images_billed"]
        with RequestLedger(ledger_location) as ledger:
            before = sorted(ledger.requests("animals"))
        assert billed > 0 and before
        # the ledger as the previous version wrote it: the same tables, keyed by job_key
        _run(
            ledger_location,
            [f"ALTER TABLE {table} RENAME COLUMN {NEW_KEY} TO {OLD_KEY}" for table in KEYED_TABLES],
        )
        assert all(_columns(ledger_location, table) >= {OLD_KEY} for table in KEYED_TABLES)

        again = project.run("animals")

        assert again.success
        assert emulator.emulator.stats()["images_billed"] == billed, "nothing is paid again"
        assert len(project.catalog(["animals"])) == billed
        for table in KEYED_TABLES:
            assert NEW_KEY in _columns(ledger_location, table)
            assert OLD_KEY not in _columns(ledger_location, table)
        with RequestLedger(ledger_location) as ledger:
            assert sorted(ledger.requests("animals")) == before
        spent = [
            again.asset_materializations_for_node(step)[0].metadata["spent_usd"].value
            for step in ("images", "redux_variations")
        ]
        assert spent == [0, 0]
