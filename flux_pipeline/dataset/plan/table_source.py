"""What a partition is built from: a prompt table (prompts/KEY.parquet) or a recipe
(recipes/KEY.yaml). Its version is the SHA-256 of that file (for a final recipe, also of its
draft's recipe and the draft's decisions in force), and what is read is a prompt table: a recipe's
is expanded, and its rows checked, into the partition's folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ..catalog.decisions import DecisionLog, decisions_version
from ..files.images import sha256_of
from ..files.layout import PARTITION_KEY, DatasetLayout
from ..files.storage import write_parquet_atomically
from .final_rows import final_table
from .prompt_table import PromptRow, Reject, plan_rows
from .recipe_rows import expand
from .recipe_spec import FinalRecipe, RecipeError, is_recipe, load_recipe


def find_sources(layout: DatasetLayout, log) -> dict[str, UPath]:
    """{partition key: table or recipe} of every source with a usable name; a recipe named like a
    table is skipped (the table wins), with a warning."""
    found: dict[str, UPath] = {}
    for path in [*sorted(layout.prompts_dir.glob("*.parquet")), *sorted(layout.recipes_dir.glob("*.yaml"))]:
        if not PARTITION_KEY.match(path.stem):
            log.warning(f"skipping {path.name}: a table or recipe name must match {PARTITION_KEY.pattern}")
        elif path.stem in found:
            log.warning(f"skipping {path}: the prompt table {found[path.stem]} has the same name")
        else:
            found[path.stem] = path
    return found


def source_versions(layout: DatasetLayout, log, ledger_location: Callable[[], str]) -> dict[str, str]:
    """{partition key: version} of every source; `ledger_location()` is called only for a final
    recipe (it reads the decisions log)."""
    return {
        key: source_version(layout, path, ledger_location) for key, path in find_sources(layout, log).items()
    }


def source_version(layout: DatasetLayout, path: UPath, ledger_location: Callable[[], str]) -> str:
    """The file's SHA-256; a final recipe's also covers what it renders: its draft's recipe and the
    draft's decisions in force (a new keep marks the final partition stale). A recipe that cannot be
    read is versioned by its file alone (its run says what is wrong)."""
    version = sha256_of(path)
    try:
        recipe = load_recipe(path) if is_recipe(path) else None
    except RecipeError:
        return version
    if not isinstance(recipe, FinalRecipe) or not (draft := layout.source(recipe.final_of)).exists():
        return version
    with DecisionLog(ledger_location()) as decisions:
        reviewed = decisions_version(decisions.entries(recipe.final_of))
    return hashlib.sha256(f"{version}\0{sha256_of(draft)}\0{reviewed}".encode()).hexdigest()


def partition_table(
    layout: DatasetLayout, partition: str, request_defaults: dict, ledger_location: str
) -> UPath:
    """The prompt table to read for the partition: its own, or its recipe's, expanded into
    outputs/KEY/recipe_table.parquet (read it with `planned_rows`, which checks a recipe's rows)."""
    source = layout.source(partition)
    if not is_recipe(source):
        return source
    destination = layout.partition_files(partition).recipe_table
    write_parquet_atomically(recipe_table(layout, source, ledger_location), destination)
    return destination


def recipe_table(layout: DatasetLayout, source: UPath, ledger_location: str) -> pa.Table:
    """The recipe's rows; a final recipe's are its draft's kept rows."""
    recipe = load_recipe(source)
    if isinstance(recipe, FinalRecipe):
        with DecisionLog(ledger_location) as decisions:
            latest = decisions.latest(recipe.final_of)
        return final_table(layout, recipe, source, latest)
    return expand(recipe, source)


def planned_rows(
    source: UPath, table: pq.ParquetFile, path: UPath, request_defaults: dict, prompts_dir: UPath
) -> Iterator[PromptRow | Reject]:
    """The rows of the prompt table at `path` (opened as `table`) planned into requests. A recipe's
    rows differ only in what its keys give them, so a bad one is not a reject but the recipe's
    error (RecipeError, named by the key its value came from), raised before the row is yielded."""
    outcomes = plan_rows(table, path, request_defaults, prompts_dir)
    if not is_recipe(source):
        yield from outcomes
        return
    for outcome in outcomes:
        if isinstance(outcome, Reject):
            raise RecipeError(
                source, _recipe_key(outcome.field), f"{outcome.reason} (row {outcome.prompt_id})"
            )
        yield outcome


RECIPE_KEYS = {
    "prompt_id": "axes",
    "prompt": "templates",
    "width": "defaults.image_size",
    "height": "defaults.image_size",
    "redux_image": "defaults.redux.image",
    "redux_prompt": "defaults.redux.prompt",
    "redux_model": "defaults.redux.model",
}
"""The recipe key behind a prompt table column (any other column is the default of its name)."""


def _recipe_key(column: str) -> str:
    return RECIPE_KEYS.get(column, f"defaults.{column}")
