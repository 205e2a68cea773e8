"""What a partition is built from: a prompt table (prompts/KEY.parquet) or a recipe
(recipes/KEY.yaml). Either way its version is the SHA-256 of that file, and what is read is a
prompt table: a recipe's is expanded, and its rows checked, into the partition's folder."""

from __future__ import annotations

from upath import UPath

from .files import sha256_of
from .layout import PARTITION_KEY, DatasetLayout
from .prompt_table import Reject, open_prompt_table, plan_rows
from .recipe_rows import expand
from .recipe_spec import RecipeError, load_recipe
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


def source_versions(layout: DatasetLayout, log) -> dict[str, str]:
    """{partition key: version} of every source."""
    return {key: sha256_of(path) for key, path in find_sources(layout, log).items()}


def is_recipe(path: UPath) -> bool:
    return path.suffix == ".yaml"


def partition_table(layout: DatasetLayout, partition: str, request_defaults: dict) -> UPath:
    """The prompt table to read for the partition: its own, or its recipe's, written to
    outputs/KEY/recipe_table.parquet once every expanded row is valid (RecipeError otherwise)."""
    source = layout.source(partition)
    if not is_recipe(source):
        return source
    destination = layout.partition_files(partition).recipe_table
    write_recipe_table(source, destination, request_defaults, layout.prompts_dir)
    return destination


def write_recipe_table(source: UPath, destination: UPath, request_defaults: dict, prompts_dir: UPath) -> None:
    """The recipe in `source` expanded into the prompt table `destination`, its rows checked."""
    write_parquet_atomically(expand(load_recipe(source), source), destination)
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
