"""A validated recipe expanded into the rows of a prompt table: today's columns plus one
`axis_NAME` column per axis. Deterministic (the same recipe gives a byte-identical table), and each
row's `prompt_id`, template, seed and Redux choice derive from its assignment alone, so editing
one axis value leaves every other row as it was (and the ledger reuses what those rows paid for)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random

import pyarrow as pa
from upath import UPath

from ..fal.models import ImageSize, takes
from .prompt_table import AXIS_PREFIX, REDUX_FIELDS
from .recipe_spec import REQUEST_DEFAULTS, Recipe, RecipeError, Sample

BALANCE_ATTEMPTS = 20
"""Seeded greedy passes tried before a balance is declared impossible (exclusions can make it so)."""

Assignment = dict[str, str]


def expand(recipe: Recipe, path: UPath, *, final: bool = False) -> pa.Table:
    """The prompt table of `recipe` (read from `path`, which errors name): its draft when it names
    a `draft_model`, unless `final` (the rows with `model` and every default, Redux included)."""
    assignments = allowed_assignments(recipe)
    if recipe.mode == "sample" and recipe.sample is not None:  # validation requires one for the mode
        assignments = _sample(recipe, recipe.sample, assignments, path)
    draft = recipe.defaults.draft_model is not None and not final
    rows = [_row(recipe, assignment, draft) for assignment in assignments]
    return pa.Table.from_pylist(rows, schema=_schema(recipe, rows))


def allowed_assignments(recipe: Recipe) -> list[Assignment]:
    """Every combination of axis values, in the recipe's order, less the excluded ones."""
    names = list(recipe.axes)
    every = (dict(zip(names, values)) for values in itertools.product(*map(recipe.values, names)))
    return [a for a in every if not any(_matches(a, rule) for rule in recipe.exclude)]


def _matches(assignment: Assignment, rule: dict[str, str]) -> bool:
    return all(assignment[axis] == value for axis, value in rule.items())


def _sample(recipe: Recipe, sample: Sample, candidates: list[Assignment], path: UPath) -> list[Assignment]:
    """`sample.n` distinct assignments drawn by weight (the product of their values' weights),
    each value of a balanced axis appearing ⌊n/k⌋ or ⌈n/k⌉ times; in the product's order."""
    n = sample.n
    if n > len(candidates):
        raise RecipeError(
            path, "sample.n", f"{n} is more than the {len(candidates)} combinations left after exclusions"
        )
    weights = {axis: {item.value: item.weight for item in items} for axis, items in recipe.axes.items()}
    for attempt in range(BALANCE_ATTEMPTS):
        rng = random.Random(f"{sample.seed}:{attempt}")
        keys = [
            rng.random() ** (1 / math.prod(weights[axis][value] for axis, value in a.items()))
            for a in candidates
        ]
        order = sorted(range(len(candidates)), key=lambda i: -keys[i])
        chosen = _balanced_pick(recipe, sample, candidates, order, n)
        if chosen is not None:
            return [candidates[i] for i in sorted(chosen)]
    balance = ", ".join(sample.balance)
    raise RecipeError(
        path, "sample.balance", f"cannot balance {balance} over {n} rows with these axes and exclusions"
    )


def _balanced_pick(
    recipe: Recipe, sample: Sample, candidates: list[Assignment], order: list[int], n: int
) -> list[int] | None:
    """The first `n` candidates in `order` that keep every balanced axis within its quota (a value
    at most ⌈n/k⌉ times, and only n mod k values that often); None when the quota cannot be met."""
    quotas = {axis: divmod(n, len(recipe.axes[axis])) for axis in sample.balance}
    counts = {axis: dict.fromkeys(recipe.values(axis), 0) for axis in quotas}
    over = dict.fromkeys(quotas, 0)
    chosen: list[int] = []
    for index in order:
        held = {axis: counts[axis][value] for axis, value in candidates[index].items() if axis in quotas}
        if all(
            held[axis] < base or (held[axis] == base and over[axis] < extra)
            for axis, (base, extra) in quotas.items()
        ):
            for axis, (base, _) in quotas.items():
                over[axis] += held[axis] == base
                counts[axis][candidates[index][axis]] += 1
            chosen.append(index)
            if len(chosen) == n:
                return chosen
    return None


def prompt_id(assignment: Assignment) -> str:
    """Stable for the assignment, whatever else the recipe holds."""
    return f"r{_digest('assignment', json.dumps(assignment, sort_keys=True))[:16]}"


def _digest(purpose: str, text: str) -> str:
    return hashlib.sha256(f"{purpose}\0{text}".encode()).hexdigest()


def _fraction(purpose: str, text: str) -> float:
    """A stable number in [0, 1) for the row."""
    return int(_digest(purpose, text)[:8], 16) / 2**32


def _row(recipe: Recipe, assignment: Assignment, draft: bool) -> dict:
    """A draft row has the draft model, no Redux, and only the defaults the draft model takes."""
    key = prompt_id(assignment)
    defaults = recipe.defaults
    model = defaults.draft_model if draft and defaults.draft_model else defaults.model
    template = recipe.templates[int(_digest("template", key)[:8], 16) % len(recipe.templates)]
    row: dict = {"prompt_id": key, "prompt": template.format(**assignment), "model": model}
    row.update(_size_columns(model, defaults.image_size))
    if defaults.seed_from == "row":
        row["seed"] = int(_digest("seed", key)[:8], 16)
    elif defaults.seed is not None:
        row["seed"] = defaults.seed
    redux = (
        None
        if draft or defaults.redux is None or _fraction("redux", key) >= defaults.redux.share
        else defaults.redux
    )
    for name in REQUEST_DEFAULTS:
        value = getattr(defaults, name)
        if value is not None and (takes(model, name) or (redux is not None and name in REDUX_FIELDS)):
            row[name] = str(value) if name == "safety_tolerance" else value
    if redux is not None:
        row.update(redux_image=redux.image, redux_prompt=redux.prompt, redux_model=defaults.redux_model())
    row.update({f"{AXIS_PREFIX}{axis}": value for axis, value in assignment.items()})
    return row


def _size_columns(model: str, size: ImageSize | str | None) -> dict:
    """`image_size`, or `width` and `height`, when the model takes a size (ultra does not)."""
    if size is None or not takes(model, "image_size"):
        return {}
    if isinstance(size, ImageSize):
        return {"width": size.width, "height": size.height}
    return {"image_size": size}


COLUMN_TYPES = {
    "width": pa.int64(),
    "height": pa.int64(),
    "seed": pa.int64(),
    "num_images": pa.int64(),
    "num_inference_steps": pa.int64(),
    "guidance_scale": pa.float64(),
    "enhance_prompt": pa.bool_(),
    "raw": pa.bool_(),
}
"""The non-text columns a recipe can write; every other column is a string."""


def _schema(recipe: Recipe, rows: list[dict]) -> pa.Schema:
    """The columns the rows use, in a fixed order: today's prompt table columns, then the axes."""
    used = {name for row in rows for name in row}
    order = ["prompt_id", "prompt", "model", "image_size", "width", "height", "seed", *REQUEST_DEFAULTS]
    order += ["redux_image", "redux_prompt", "redux_model"]
    order += [f"{AXIS_PREFIX}{axis}" for axis in recipe.axes]
    return pa.schema([(name, COLUMN_TYPES.get(name, pa.string())) for name in order if name in used])
