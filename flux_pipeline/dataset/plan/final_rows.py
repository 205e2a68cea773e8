"""Draft, then final: a final recipe (`final_of: DRAFT`) renders again, with the draft recipe's
`model` and all its defaults, only the draft partition's rows that were kept (`keep: reviewed`:
whose draft image a reviewer kept, in the review decisions log; `keep: all`: every row with a draft
image). Each final row names, in `draft_image_id`, the draft image it replaces."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from ...fal.models import TEXT_TO_IMAGE_ENDPOINTS
from ..catalog.decisions import KEEP
from ..catalog.table import iter_partition
from ..files.layout import DatasetLayout
from .recipe_rows import expand
from .recipe_spec import FinalRecipe, Recipe, RecipeError, is_recipe, load_recipe


def draft_recipe(layout: DatasetLayout, final: FinalRecipe, source: UPath) -> tuple[Recipe, UPath]:
    """The recipe a final recipe renders, and its file."""
    draft_source = layout.source(final.final_of)
    if not (is_recipe(draft_source) and draft_source.exists()):
        expected = layout.recipe(final.final_of)
        raise RecipeError(source, "final_of", f"{final.final_of!r} is not a recipe partition (no {expected})")
    draft = load_recipe(draft_source)
    if isinstance(draft, FinalRecipe):
        raise RecipeError(source, "final_of", f"{final.final_of!r} is a final recipe itself, not a draft")
    return draft, draft_source


def final_table(
    layout: DatasetLayout, final: FinalRecipe, source: UPath, decisions: dict[str, dict]
) -> pa.Table:
    """The final rows; `decisions`: the draft partition's latest decision per image_id."""
    draft, draft_source = draft_recipe(layout, final, source)
    drafts = draft_images(layout, final.final_of)
    if not drafts:
        raise RecipeError(
            source, "final_of", f"partition {final.final_of!r} has no draft images yet: build it first"
        )
    kept = {
        key: next((image for image in images if final.keep == "all" or _kept(decisions, image)), None)
        for key, images in drafts.items()
    }
    kept = {key: image for key, image in kept.items() if image is not None}
    if not kept:
        raise RecipeError(
            source,
            "keep",
            f"none of the {len(drafts)} draft rows of {final.final_of!r} has a kept image yet: review them "
            f"(flux-pipeline review --partition {final.final_of})",
        )
    table = expand(draft, draft_source, final=True)
    table = table.filter(pc.is_in(table["prompt_id"], value_set=pa.array(sorted(kept), pa.string())))
    drafted = pa.array([kept[key] for key in table["prompt_id"].to_pylist()], pa.string())
    return table.append_column("draft_image_id", drafted)


def _kept(decisions: dict[str, dict], image: str) -> bool:
    return decisions.get(image, {}).get("decision") == KEEP


def draft_images(layout: DatasetLayout, partition: str) -> dict[str, list[str]]:
    """prompt_id → its text-to-image images in the partition's catalog, by image index."""
    columns = ["prompt_id", "image_id", "endpoint", "image_index"]
    found: dict[str, list[tuple[int, str]]] = {}
    for batch in iter_partition(layout.catalog_dir, partition, columns):
        for row in batch.to_pylist():
            if row["endpoint"] in TEXT_TO_IMAGE_ENDPOINTS:
                found.setdefault(row["prompt_id"], []).append((row["image_index"], row["image_id"]))
    return {key: [image for _, image in sorted(images)] for key, images in found.items()}
