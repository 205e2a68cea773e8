"""`flux-pipeline recipe preview FILE`: a recipe's first rows and what the whole table would cost,
before anything is sent (every request priced as new)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import pandas as pd
from upath import UPath

from ..files.layout import DatasetLayout
from ..files.storage import parquet_file, write_parquet_atomically
from ..plan.prompt_table import PromptRow, open_prompt_table
from ..plan.table_source import planned_rows, recipe_table
from .estimate import Estimate, estimate
from .pricing import UnitPrice


@dataclass(frozen=True)
class RecipePreview:
    rows: int
    head: pd.DataFrame
    estimate: Estimate


def preview_recipe(
    source: UPath,
    layout: DatasetLayout,
    ledger_location: str,
    request_defaults: dict,
    prices: dict[str, UnitPrice],
    head_rows: int,
) -> RecipePreview:
    """RecipeError when the recipe or one of its rows is bad (a final recipe reads its draft's
    catalog in `layout` and decisions in the ledger)."""
    prompts_dir = layout.prompts_dir
    with tempfile.TemporaryDirectory(prefix="recipe-preview-") as folder:
        table = UPath(folder) / "recipe_table.parquet"
        write_parquet_atomically(recipe_table(layout, source, ledger_location), table)
        opened = open_prompt_table(table)
        planned = planned_rows(source, opened, table, request_defaults, prompts_dir)
        rows = (row for row in planned if isinstance(row, PromptRow))
        forecast = estimate(rows, lambda job: None, prices, "preview", UPath(folder), prompts_dir)
        head = parquet_file(table).read().slice(0, head_rows).to_pandas()
        return RecipePreview(opened.metadata.num_rows, head, forecast)
