"""A prompt recipe (data/recipes/KEY.yaml): templates with `{slots}`, axes of values (optionally
weighted), the full product or a seeded sample with per-axis balance, exclusions and per-recipe
defaults. Parsed from YAML and validated with pydantic; every error names the key path
(`axes.species: an axis needs at least one value`)."""

from __future__ import annotations

import math
import re
import string
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from upath import UPath

from ...fal.models import (
    REDUX,
    REDUX_ENDPOINTS,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_ENDPOINTS,
    ULTRA,
    ULTRA_REDUX,
    SizeChoice,
    takes,
)
from ..files.layout import PARTITION_KEY
from .prompt_table import GENERATED, REDUX_FIELDS, PromptTableError

AXIS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
"""An axis becomes the column `axis_NAME`, so its name must be a safe identifier."""
MAX_COMBINATIONS = 1_000_000
"""`mode: product` makes every combination; past this many it is refused (a sample draws from a
space of any size without enumerating it)."""
REQUEST_DEFAULTS = (
    "num_images",
    "output_format",
    "safety_tolerance",
    "enhance_prompt",
    "num_inference_steps",
    "guidance_scale",
    "aspect_ratio",
    "raw",
)
"""Defaults copied as they are into the prompt table column of the same name."""


class RecipeError(PromptTableError):
    """A recipe that cannot be expanded; `key` is the path of the offending key (`sample.n`)."""

    kind = "recipe"

    def __init__(self, path: UPath, key: str, problem: str):
        self.key = key
        super().__init__(path, f"{key}: {problem}" if key else problem)


def _as_text(item: object) -> object:
    """A number written where a value is meant (`size: [1, 2]`) is that text."""
    return str(item) if isinstance(item, int | float) and not isinstance(item, bool) else item


def _as_value(item: object) -> object:
    """An axis value is written as a plain scalar or as {value, weight}."""
    item = _as_text(item)
    return {"value": item} if isinstance(item, str) else item


Text = Annotated[str, BeforeValidator(_as_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxisValue(_Strict):
    value: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class Sample(_Strict):
    n: int = Field(ge=1)
    seed: int = 0
    balance: list[str] = Field(default_factory=list)


class ReduxDefaults(_Strict):
    share: float = Field(ge=0, le=1)
    """The fraction of rows (chosen by their prompt_id, so stable) that also get a Redux variation."""
    image: str = GENERATED
    prompt: str | None = None
    model: str | None = None


class Defaults(_Strict):
    model: str = TEXT_TO_IMAGE
    draft_model: str | None = None
    """When set, the recipe's own partition is a cheap draft rendered with this model (without
    Redux); a final recipe (`final_of`) renders the rows kept from it with `model`."""
    image_size: SizeChoice | None = None
    seed: int | None = None
    seed_from: Literal["row"] | None = None
    """`row`: each row's seed is derived from its prompt_id (stable when other rows change)."""
    num_images: int | None = None
    output_format: str | None = None
    safety_tolerance: int | str | None = None
    enhance_prompt: bool | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    aspect_ratio: str | None = None
    raw: bool | None = None
    redux: ReduxDefaults | None = None

    def redux_model(self) -> str:
        if self.redux is None or self.redux.model is None:
            return ULTRA_REDUX if self.model == ULTRA else REDUX
        return self.redux.model


class Recipe(_Strict):
    """Each row fills one of `templates` (chosen by its prompt_id) with its combination of axis
    values: every combination (`product`) or a seeded `sample`, less the `exclude`d ones."""

    templates: list[str] = Field(min_length=1)
    axes: dict[str, list[Annotated[AxisValue, BeforeValidator(_as_value)]]]
    mode: Literal["product", "sample"] = "product"
    sample: Sample | None = None
    exclude: list[dict[str, Text]] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)

    def values(self, axis: str) -> list[str]:
        return [item.value for item in self.axes[axis]]


class FinalRecipe(_Strict):
    """The final render of a draft recipe's partition: its rows that were kept (`reviewed`: whose
    draft image a reviewer kept; `all`: every row with a draft image), with the draft recipe's
    `model` and defaults, each row naming the draft image it replaces."""

    final_of: str = Field(pattern=PARTITION_KEY.pattern)
    keep: Literal["reviewed", "all"] = "reviewed"


def is_recipe(path: UPath) -> bool:
    """A partition's source is a recipe (recipes/KEY.yaml) rather than a prompt table."""
    return path.suffix == ".yaml"


def load_recipe(path: UPath) -> Recipe | FinalRecipe:
    """The recipe in `path`, validated; RecipeError naming the key otherwise."""
    if not path.is_file():
        raise RecipeError(path, "", "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(path, "", f"not readable YAML ({exc})") from None
    return parse_recipe(path, data)


def parse_recipe(path: UPath, data: object) -> Recipe | FinalRecipe:
    if not isinstance(data, dict):
        raise RecipeError(path, "", "a recipe is a mapping of keys (templates, axes, ...)")
    try:
        if "final_of" in data:
            return FinalRecipe.model_validate(data)
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise RecipeError(path, key_path(error["loc"]), error["msg"].removeprefix("Value error, ")) from None
    for check in (_check_axes, _check_templates, _check_exclusions, _check_sample, _check_defaults):
        check(path, recipe)
    return recipe


def key_path(loc: tuple) -> str:
    """pydantic's location as the recipe's key path: `axes.species[2].weight`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in ("preset", "custom"):  # SizeChoice's branch tags
            text += f".{part}" if text else str(part)
    return text


def _check_axes(path: UPath, recipe: Recipe) -> None:
    if not recipe.axes:
        raise RecipeError(path, "axes", "a recipe needs at least one axis")
    for name, items in recipe.axes.items():
        if not AXIS_NAME.match(name):
            raise RecipeError(path, f"axes.{name}", f"an axis name must match {AXIS_NAME.pattern}")
        if not items:
            raise RecipeError(path, f"axes.{name}", "an axis needs at least one value")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item.value in seen:
                raise RecipeError(path, f"axes.{name}[{index}]", f"duplicate value {item.value!r}")
            seen.add(item.value)


def template_slots(template: str) -> list[str]:
    return [slot for _, slot, _, _ in string.Formatter().parse(template) if slot is not None]


def _check_templates(path: UPath, recipe: Recipe) -> None:
    for index, template in enumerate(recipe.templates):
        try:
            slots = template_slots(template)
        except ValueError as exc:
            raise RecipeError(path, f"templates[{index}]", f"not a template ({exc})") from None
        for slot in slots:
            if slot not in recipe.axes:
                known = ", ".join(recipe.axes)
                raise RecipeError(path, f"templates[{index}]", f"unknown slot {{{slot}}}; axes: {known}")
        if not template.strip():
            raise RecipeError(path, f"templates[{index}]", "a template must not be empty")


def _check_exclusions(path: UPath, recipe: Recipe) -> None:
    for index, exclusion in enumerate(recipe.exclude):
        if not exclusion:
            raise RecipeError(path, f"exclude[{index}]", "an exclusion names at least one axis")
        for axis, value in exclusion.items():
            key = f"exclude[{index}].{axis}"
            if axis not in recipe.axes:
                raise RecipeError(path, key, f"unknown axis; axes: {', '.join(recipe.axes)}")
            if value not in recipe.values(axis):
                raise RecipeError(path, key, f"{value!r} is not a value of axis {axis}")


def combinations(recipe: Recipe) -> int:
    """The size of the product, before exclusions."""
    return math.prod(len(items) for items in recipe.axes.values())


def _check_sample(path: UPath, recipe: Recipe) -> None:
    if recipe.mode == "product" and combinations(recipe) > MAX_COMBINATIONS:
        raise RecipeError(
            path,
            "axes",
            f"{combinations(recipe)} combinations; mode: product makes every one, at most {MAX_COMBINATIONS} "
            "(use mode: sample with sample: {n: ...} to draw some of any number of them)",
        )
    if recipe.mode == "product":
        if recipe.sample is not None:
            raise RecipeError(path, "sample", "only with mode: sample")
        return
    if recipe.sample is None:
        raise RecipeError(path, "sample", "mode: sample needs sample: {n: ...}")
    for index, axis in enumerate(recipe.sample.balance):
        if axis not in recipe.axes:
            raise RecipeError(path, f"sample.balance[{index}]", f"unknown axis {axis!r}")


def _check_defaults(path: UPath, recipe: Recipe) -> None:
    defaults = recipe.defaults
    if defaults.model not in TEXT_TO_IMAGE_ENDPOINTS:
        _unknown_model(path, "defaults.model", defaults.model, TEXT_TO_IMAGE_ENDPOINTS)
    if defaults.draft_model is not None and defaults.draft_model not in TEXT_TO_IMAGE_ENDPOINTS:
        _unknown_model(path, "defaults.draft_model", defaults.draft_model, TEXT_TO_IMAGE_ENDPOINTS)
    if defaults.seed is not None and defaults.seed_from is not None:
        raise RecipeError(path, "defaults.seed_from", "give either seed or seed_from, not both")
    redux_model = defaults.redux_model()
    if defaults.redux is not None and redux_model not in REDUX_ENDPOINTS:
        _unknown_model(path, "defaults.redux.model", redux_model, REDUX_ENDPOINTS)
    given = [name for name in ("image_size", *REQUEST_DEFAULTS) if getattr(defaults, name) is not None]
    for name in given:
        by_redux = name in REDUX_FIELDS and defaults.redux is not None and takes(redux_model, name)
        taken = takes(defaults.model, name) or by_redux
        if not taken:
            raise RecipeError(path, f"defaults.{name}", f"{defaults.model} does not take {name}")


def _unknown_model(path: UPath, key: str, model: str, known: tuple[str, ...]) -> None:
    raise RecipeError(path, key, f"unknown model {model!r}; expected one of {', '.join(known)}")
