"""What a partition is built from: a prompt table (prompts/KEY.parquet) or a recipe
(recipes/KEY.yaml). Its version is the SHA-256 of that file (for a final recipe, also of its
draft's recipe and the draft's decisions in force), and what is read is a prompt table: a recipe's
is expanded, and its rows checked, into the partition's folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pyarrow as pa
from upath import UPath

from .decisions import DecisionLog, decisions_version
from .files import sha256_of
from .final_rows import final_table
from .layout import PARTITION_KEY, DatasetLayout
from .prompt_table import Reject, open_prompt_table, plan_rows
from .recipe_rows import expand
from .recipe_spec import FinalRecipe, RecipeError, is_recipe, load_recipe
from .storage import write_parquet_atomically


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
    """The prompt table to read for the partition: its own, or its recipe's, written to
    outputs/KEY/recipe_table.parquet once every expanded row is valid (RecipeError otherwise)."""
    source = layout.source(partition)
    if not is_recipe(source):
        return source
    destination = layout.partition_files(partition).recipe_table
    table = recipe_table(layout, source, ledger_location)
    write_recipe_table(table, source, destination, request_defaults, layout.prompts_dir)
    return destination


def recipe_table(layout: DatasetLayout, source: UPath, ledger_location: str) -> pa.Table:
    """The recipe's rows; a final recipe's are its draft's kept rows."""
    recipe = load_recipe(source)
    if isinstance(recipe, FinalRecipe):
        with DecisionLog(ledger_location) as decisions:
            latest = decisions.latest(recipe.final_of)
        return final_table(layout, recipe, source, latest)
    return expand(recipe, source)


def write_recipe_table(
    table: pa.Table, source: UPath, destination: UPath, request_defaults: dict, prompts_dir: UPath
) -> None:
    """The recipe's expanded `table` written to the prompt table `destination`, its rows checked."""
    write_parquet_atomically(table, destination)
    check_rows(source, destination, request_defaults, prompts_dir)


def check_rows(source: UPath, table: UPath, request_defaults: dict, prompts_dir: UPath) -> None:
    """A recipe's rows are all valid, or the first bad one is the recipe's error, named by the key
    its value came from (rows differ only in what the recipe's keys give them)."""
    for outcome in plan_rows(open_prompt_table(table), table, request_defaults, prompts_dir):
        if isinstance(outcome, Reject):
            raise RecipeError(
                source, _recipe_key(outcome.field), f"{outcome.reason} (row {outcome.prompt_id})"
            )


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
