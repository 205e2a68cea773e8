"""The assets that call fal (`images`, `redux_variations`) come from one factory: each plans its
requests from the partition's files, and the generation step (lib/generation_step.py) sends,
stores and records them."""

from collections.abc import Callable, Iterable

import dagster as dg
import pyarrow as pa
from pydantic import Field

from ..dataset.catalog.rows import CatalogRowWriter
from ..dataset.files.layout import GENERATED_STEP, VARIATIONS_STEP
from ..dataset.files.storage import write_parquet_atomically
from ..dataset.plan.requests import RowFailure
from ..fal.models import REDUX_ENDPOINTS, TEXT_TO_IMAGE_ENDPOINTS
from ..fal.types import GenerationRequest
from ..generation.engine import FAILURE_SCHEMA
from ..resources import BaseFalResource, DatasetResource
from .assets import PerDataset, dataset_asset
from .generation_step import report_spend, run_generation_step
from .metadata import preview_metadata, step_metadata
from .partitions import FAL_POOL
from .spend import add_run_spend

STEP_ENDPOINTS = {GENERATED_STEP: TEXT_TO_IMAGE_ENDPOINTS, VARIATIONS_STEP: REDUX_ENDPOINTS}


class GenerationConfig(dg.Config):
    """Run config of the steps that call fal."""

    pay_again_for_unusable: bool = Field(
        default=False,
        description="Send again, and pay fal again for, the requests it billed whose answers could not "
        "be cataloged (wrong image count, NSFW flags or seed). Off: they stay failures, never resent.",
    )


Planned = tuple[Iterable[GenerationRequest | RowFailure], float | None]
"""A step's requests for the partition, and what is left of its budget (None: no budget)."""
Plan = Callable[[dg.AssetExecutionContext, DatasetResource], Planned]


def generation_asset(name: str, step: str, deps: list[str], description: str, plan: Plan) -> PerDataset:
    @dataset_asset(name=name, deps=deps, pool=FAL_POOL, kinds={"fal", "parquet"}, description=description)
    def generate(
        context: dg.AssetExecutionContext,
        config: GenerationConfig,
        fal: BaseFalResource,
        dataset: DatasetResource,
    ) -> dg.MaterializeResult:
        requests, budget_left = plan(context, dataset)
        return generation_step(context, config, fal, dataset, step, requests, budget_left)

    return generate


def generation_step(
    context: dg.AssetExecutionContext,
    config: GenerationConfig,
    fal: BaseFalResource,
    dataset: DatasetResource,
    step: str,
    requests: Iterable[GenerationRequest | RowFailure],
    budget_left: float | None,
) -> dg.MaterializeResult:
    """Run the step, persist its failures (its rows are written as they come), fail loudly when
    the budget stopped it, else claim its spend and report."""
    files = dataset.layout.partition_files(context.partition_key)
    with CatalogRowWriter(files.step_rows(step)) as rows:
        tally = run_generation_step(
            context, fal, dataset, requests, budget_left, rows, config.pay_again_for_unusable
        )
    failures = pa.Table.from_pylist(tally.failures, schema=FAILURE_SCHEMA)
    write_parquet_atomically(failures, files.step_failures(step))
    if (budget := tally.budget).stopped:
        raise dg.Failure(
            description=f"budget of ${dataset.budget_usd:.2f} for partition {context.partition_key!r} "
            f"reached: ${budget.committed_usd:.2f} committed in this step, "
            f"{budget.not_sent} request(s) not sent",
            metadata={"requests_not_sent": budget.not_sent, "budget_usd": dataset.budget_usd},
        )
    report_spend(context, dataset, STEP_ENDPOINTS[step], tally)
    metadata = step_metadata(tally, rows)
    metadata.update(preview_metadata(dataset.layout.outputs_dir, rows.totals.head_table(), f"{step} images"))
    add_run_spend(context, metadata)
    return dg.MaterializeResult(metadata=metadata)
