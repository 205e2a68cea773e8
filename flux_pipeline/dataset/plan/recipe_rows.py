"""A validated recipe expanded into the rows of a prompt table: today's columns plus one
`axis_NAME` column per axis. Deterministic (the same recipe gives a byte-identical table), and each
row's `prompt_id`, template, seed and Redux choice derive from its assignment alone, so editing
one axis value leaves every other row as it was (and the ledger reuses what those rows paid for)."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random
from collections.abc import Iterator

import pyarrow as pa
from upath import UPath

from ...fal.models import ImageSize, takes
from .prompt_table import AXIS_PREFIX, REDUX_FIELDS
from .recipe_spec import MAX_COMBINATIONS, REQUEST_DEFAULTS, Recipe, RecipeError, Sample, combinations

MAX_DRAWS = 10_000
"""Draws tried for one sampled row before the space left is declared too small for it."""
DRAWS_PER_BALANCED_CHOICE = 200
"""Draws of the free axes tried with one choice of the balanced axes' values before the next."""

Assignment = dict[str, str]


def expand(recipe: Recipe, path: UPath, *, final: bool = False) -> pa.Table:
    """The prompt table of `recipe` (read from `path`, which errors name): its draft when it names
    a `draft_model`, unless `final` (the rows with `model` and every default, Redux included)."""
    if recipe.mode == "sample" and recipe.sample is not None:  # validation requires one for the mode
        assignments = sample_assignments(recipe, recipe.sample, path)
    else:
        assignments = allowed_assignments(recipe)
    draft = recipe.defaults.draft_model is not None and not final
    rows = [_row(recipe, assignment, draft) for assignment in assignments]
    return pa.Table.from_pylist(rows, schema=_schema(recipe, rows))


def allowed_assignments(recipe: Recipe) -> list[Assignment]:
    """Every combination of axis values, in the recipe's order, less the excluded ones."""
    names = list(recipe.axes)
    every = (dict(zip(names, values)) for values in itertools.product(*map(recipe.values, names)))
    return [a for a in every if not _excluded(recipe, a)]


def _excluded(recipe: Recipe, assignment: Assignment) -> bool:
    """Whether a rule whose axes the assignment all has matches it (a partial one is judged on the
    rules of its own axes)."""
    return any(
        all(assignment.get(axis) == value for axis, value in rule.items())
        for rule in recipe.exclude
        if rule.keys() <= assignment.keys()
    )


class _Draws:
    """A seeded sampler of a recipe's space that never enumerates it: the free axes' values are
    drawn by weight, row after row, from one seeded random stream (so a combination's chance is
    the product of its values' weights; an excluded or repeated one is drawn again), and each
    balanced axis of k values deals them in blocks of k rows, each value once per block in a
    seeded order. What row j draws does not depend on how many rows follow, so rows already dealt
    never change when more are asked for, and after n rows each balanced value has appeared
    ⌊n/k⌋ or ⌈n/k⌉ times."""

    def __init__(self, recipe: Recipe, sample: Sample, path: UPath):
        self.recipe, self.sample, self.path = recipe, sample, path
        self.balanced = [axis for axis in recipe.axes if axis in sample.balance]
        self.free = [axis for axis in recipe.axes if axis not in self.balanced]
        self.values = {axis: recipe.values(axis) for axis in recipe.axes}
        self.rng = random.Random(f"{sample.seed}:draws")
        self.cumulative = {
            axis: list(itertools.accumulate(item.weight for item in recipe.axes[axis])) for axis in self.free
        }
        self.left_in_block: dict[str, list[str]] = {}
        self.seen: set[tuple[str, ...]] = set()

    def rows(self, n: int) -> Iterator[Assignment]:
        for row in range(n):
            assignment = self._row(row)
            for axis in self.balanced:
                self.left_in_block[axis].remove(assignment[axis])
            self.seen.add(tuple(assignment.values()))
            yield assignment

    def _row(self, row: int) -> Assignment:
        draws = 0
        for chosen in itertools.product(*(self._block(axis, row) for axis in self.balanced)):
            partial = dict(zip(self.balanced, chosen))
            if _excluded(self.recipe, partial):
                continue
            for _ in range(DRAWS_PER_BALANCED_CHOICE if self.free else 1):
                draws += 1
                assignment = {axis: partial.get(axis) or self._draw(axis) for axis in self.values}
                if not _excluded(self.recipe, assignment) and tuple(assignment.values()) not in self.seen:
                    return assignment
                if draws >= MAX_DRAWS:
                    break
            if draws >= MAX_DRAWS:
                break
        raise self._exhausted(row)

    def _block(self, axis: str, row: int) -> list[str]:
        """The values the axis's current block has left, in the block's seeded order."""
        k = len(self.recipe.axes[axis])
        if row % k == 0:
            block = list(self.values[axis])
            random.Random(f"{self.sample.seed}:{axis}:{row // k}").shuffle(block)
            self.left_in_block[axis] = block
        return self.left_in_block[axis]

    def _draw(self, axis: str) -> str:
        cumulative = self.cumulative[axis]
        return self.values[axis][bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])]

    def _exhausted(self, row: int) -> RecipeError:
        if self.balanced:
            return RecipeError(
                self.path,
                "sample.balance",
                f"cannot balance {', '.join(self.balanced)} over {self.sample.n} rows with these axes and "
                f"exclusions: row {row} finds no allowed combination left for the values its balance leaves",
            )
        return RecipeError(
            self.path,
            "sample.n",
            f"{self.sample.n} distinct combinations could not be drawn: {MAX_DRAWS} draws for row {row} "
            "found only excluded or already drawn ones (the space left after exclusions is too small)",
        )


def sample_assignments(recipe: Recipe, sample: Sample, path: UPath) -> list[Assignment]:
    """`sample.n` distinct allowed assignments, drawn without enumerating the space (_Draws), in
    the order drawn; deterministic by `sample.seed`, and the first n of a larger n."""
    if combinations(recipe) <= MAX_COMBINATIONS and sample.n > (left := len(allowed_assignments(recipe))):
        raise RecipeError(
            path, "sample.n", f"{sample.n} is more than the {left} combinations left after exclusions"
        )
    for index, axis in enumerate(sample.balance):
        for value in recipe.values(axis):
            if _excluded(recipe, {axis: value}):
                raise RecipeError(
                    path,
                    f"sample.balance[{index}]",
                    f"{axis} cannot balance: its value {value!r} is excluded from every combination",
                )
    return list(_Draws(recipe, sample, path).rows(sample.n))


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
