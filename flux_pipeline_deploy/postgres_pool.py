"""A PostgreSQL event log storage whose concurrency pools hold under contention.

dagster-postgres 0.29 claims a pool slot with `SELECT ... FOR UPDATE SKIP LOCKED` and then an
`UPDATE ... WHERE id = ?` on an autocommit connection: the row lock ends with the SELECT, so
two steps claiming at the same moment can both take the same free slot, and a pool of 1 runs
two fal steps at once (reproduced: 8 concurrent claimers on 1 slot, 28 of 50 trials claimed it
more than once). Here the UPDATE itself is the test-and-set: it only takes a slot that is still
free, so exactly one claimer wins. Configured as `event_log_storage` in deploy/dagster.yaml.

It overrides the private `_claim_concurrency_slot` of dagster-postgres 0.29, so it refuses to load
on any other release: check the upstream method again before widening SUPPORTED.
"""

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencySlotStatus
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

SUPPORTED = "0.29."
"""The dagster-postgres releases whose slot claim this module was written against."""


def check_version(installed: str) -> None:
    if not installed.startswith(SUPPORTED):
        raise RuntimeError(
            f"PoolSafePostgresEventLogStorage was written for dagster-postgres {SUPPORTED}x, not "
            f"{installed}: check its _claim_concurrency_slot and update flux_pipeline_deploy"
        )


check_version(version("dagster-postgres"))


class PoolSafePostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PoolSafePostgresEventLogStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str
    ) -> ConcurrencySlotStatus:
        free_slot = db.and_(
            ConcurrencySlotsTable.c.concurrency_key == concurrency_key,
            ConcurrencySlotsTable.c.step_key == None,  # noqa: E711
            ConcurrencySlotsTable.c.deleted == False,  # noqa: E712
        )
        with self.index_connection() as conn:
            candidates = conn.execute(
                db_select([ConcurrencySlotsTable.c.id]).select_from(ConcurrencySlotsTable).where(free_slot)
            ).fetchall()
            for (slot_id,) in candidates:
                taken = conn.execute(
                    ConcurrencySlotsTable.update()
                    .values(run_id=run_id, step_key=step_key)
                    .where(db.and_(ConcurrencySlotsTable.c.id == slot_id, free_slot))
                ).rowcount
                if taken:
                    return ConcurrencySlotStatus.CLAIMED
        return ConcurrencySlotStatus.BLOCKED
