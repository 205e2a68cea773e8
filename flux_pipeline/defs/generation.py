"""The assets that call fal, one partition per prompt table: `images` (one text-to-image request
per valid row) and `redux_variations` (Redux variations of a given image or of the row's
generated one)."""

from functools import partial

import dagster as dg
import pyarrow.compute as pc

from ..dataset.layout import GENERATED_STEP, VARIATIONS_STEP
from ..dataset.plans import redux_requests, text_to_image_request
from ..lib.generation_asset import Planned, generation_asset
from ..resources import DatasetResource


def _text_to_image_plan(context: dg.AssetExecutionContext, dataset: DatasetResource) -> Planned:
    files = dataset.layout.partition_files(context.partition_key)
    return map(text_to_image_request, files.prompt_rows()), dataset.budget_usd


def _redux_plan(context: dg.AssetExecutionContext, dataset: DatasetResource) -> Planned:
    """The Redux rows' requests; the budget left is what `images` did not spend."""
    files = dataset.layout.partition_files(context.partition_key)
    requests = redux_requests(
        files.prompt_rows(),
        files.outputs_dir,
        dataset.layout.prompts_dir,
        partial(files.first_images, GENERATED_STEP),
    )
    if dataset.budget_usd is None:
        return requests, None
    spent = pc.sum(files.read_step(GENERATED_STEP, ["cost_usd"])["cost_usd"]).as_py() or 0.0
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
