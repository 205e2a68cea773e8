"""The Dagster side of a generation step: the engine (flux_pipeline.generation) run with the
step's context and resources, fal's prices read once per step, and the spend claimed for the
materialization."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
import httpx

from ..dataset.catalog.rows import CatalogRowWriter
from ..dataset.costs.pricing import UnitPrice, price_list
from ..dataset.money.leases import LeaseKeeper
from ..dataset.money.ledger import RunContext, RunLedger
from ..dataset.plan.requests import RowFailure
from ..fal.errors import FalError
from ..fal.models import ENDPOINTS
from ..fal.types import GenerationRequest
from ..generation.budget import Budget
from ..generation.engine import StepOutput, StepTally, send_rounds
from ..generation.results import RowContext
from ..resources import BaseFalResource, DatasetResource
from .spend import BACKFILL_TAG, orphaned_spend_claims


def step_prices(fal: BaseFalResource, dataset: DatasetResource, log) -> dict[str, UnitPrice]:
    """The unit price of each endpoint, read from fal once per step; the configured price where
    fal's pricing API cannot be read (never a failed run)."""
    try:
        from_fal = fal.prices(list(ENDPOINTS))
    except (FalError, httpx.HTTPError, OSError) as exc:
        log.warning(f"fal's pricing API could not be read ({exc}); costing with the configured price")
        from_fal = {}
    return price_list(list(ENDPOINTS), dataset.configured_price(), from_fal)


def run_generation_step(
    context: dg.AssetExecutionContext,
    fal: BaseFalResource,
    dataset: DatasetResource,
    planned: Iterable[GenerationRequest | RowFailure],
    budget_left: float | None,
    rows: CatalogRowWriter,
    pay_again_for_unusable: bool = False,
) -> StepTally:
    """Requests are drawn lazily and only requests in flight are held, so memory stays flat as the
    partition grows; every output image's row goes to `rows` as soon as its file is stored. Requests
    another run holds are taken up in later rounds, once that run stored them or its lease ran
    out (between rounds nothing of this run is in flight, so two runs never wait on each other)."""
    tally = StepTally(Budget(budget_left))
    partition, backend = context.partition_key, fal.backend
    backfill = context.run.tags.get(BACKFILL_TAG)
    run = RunContext(
        context.run.run_id, backend, backfill, dataset.claim_lease_seconds, dataset.lost_request_wait
    )
    where = RowContext(partition, run.run_id, backend, dataset.layout.partition_files(partition))
    with dataset.request_ledger() as ledger:
        run_ledger = RunLedger(ledger, partition, run)
        prices = step_prices(fal, dataset, context.log)
        out = StepOutput(where, rows, run_ledger, prices, context.log, pay_again_for_unusable)
        try:
            with LeaseKeeper(run_ledger.renew, run.lease_seconds / 3):
                send_rounds(fal, planned, out, tally, dataset.max_download_bytes)
        finally:
            run_ledger.release()
    return tally


def report_spend(
    context: dg.AssetExecutionContext, dataset: DatasetResource, endpoints: tuple[str, ...], tally: StepTally
) -> None:
    """Claim for this materialization the spend no materialization reported yet, on every
    endpoint the step may call (orphaned claims of runs that died before materializing
    included); call it only when the step will materialize, so that no spend is claimed by a run
    that shows none."""
    partition, run_id, lease = context.partition_key, context.run.run_id, dataset.claim_lease_seconds
    with dataset.request_ledger() as ledger:
        for endpoint in endpoints:
            orphans = orphaned_spend_claims(context, ledger, endpoint, lease)
            tally.spend += ledger.report_spend(partition, endpoint, run_id, orphans)
