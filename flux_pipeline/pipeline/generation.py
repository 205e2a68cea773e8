"""The assets that call fal, one partition per prompt table: `images` (one text-to-image request
per valid row) and `redux_variations` (Redux variations of a given image or of the row's
generated one)."""

from functools import partial

import dagster as dg
import pyarrow.compute as pc

from ..dataset.catalog.steps import first_images, read_step
from ..dataset.files.layout import GENERATED_STEP, VARIATIONS_STEP
from ..dataset.plan.prompt_table import read_prompt_rows
from ..dataset.plan.requests import redux_requests, text_to_image_request
from ..lib.generation_asset import Planned, generation_asset
from ..resources import DatasetResource


def _text_to_image_plan(context: dg.AssetExecutionContext, dataset: DatasetResource) -> Planned:
    files = dataset.layout.partition_files(context.partition_key)
    return map(text_to_image_request, read_prompt_rows(files)), dataset.budget_usd


def _redux_plan(context: dg.AssetExecutionContext, dataset: DatasetResource) -> Planned:
    """The Redux rows' requests; the budget left is what `images` did not spend."""
    files = dataset.layout.partition_files(context.partition_key)
    requests = redux_requests(
        read_prompt_rows(files),
        files.outputs_dir,
        dataset.layout.prompts_dir,
        partial(first_images, files, GENERATED_STEP),
    )
    if dataset.budget_usd is None:
        return requests, None
    spent = pc.sum(read_step(files, GENERATED_STEP, ["cost_usd"])["cost_usd"]).as_py() or 0.0
    return requests, dataset.budget_usd - spent


images = generation_asset(
    "images",
    GENERATED_STEP,
    deps=["prompts"],
    description="One FLUX1.1 [pro] text-to-image request per valid row, run concurrently.",
    plan=_text_to_image_plan,
)

redux_variations = generation_asset(
    "redux_variations",
    VARIATIONS_STEP,
    deps=["images"],
    description="FLUX1.1 [pro] Redux variations of a given image or of the row's generated image.",
    plan=_redux_plan,
)
