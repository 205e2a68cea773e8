"""Reading a prompt table and turning its rows into validated requests or rejects."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ...fal.data_uri import decode_data_uri
from ...fal.errors import FalError, FalInputError
from ...fal.models import (
    REDUX,
    REDUX_ENDPOINTS,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_ENDPOINTS,
    ULTRA,
    ULTRA_REDUX,
    FluxInput,
    input_model,
    takes,
    validate_input,
)
from ..files.layout import PartitionFiles
from ..files.storage import is_local, parquet_file

GENERATED = "generated"
"""`redux_image` value asking to vary the row's own first generated image."""


def _unwrapped(column_type: pa.DataType) -> pa.DataType:
    """A dictionary column (pandas categorical) is read as its values."""
    return column_type.value_type if pa.types.is_dictionary(column_type) else column_type


def _text(column_type: pa.DataType) -> bool:
    """Any Arrow string: string, large_string (Polars, pandas 3), string_view."""
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return any(is_kind(_unwrapped(column_type)) for is_kind in strings)


def _numeric(column_type: pa.DataType) -> bool:
    """Integers or floats: where a whole number is expected (WHOLE_NUMBER_COLUMNS), a float column
    (pandas writes an integer column with gaps as float) is checked value by value."""
    column_type = _unwrapped(column_type)
    return pa.types.is_integer(column_type) or pa.types.is_floating(column_type)


def _flag(column_type: pa.DataType) -> bool:
    return pa.types.is_boolean(_unwrapped(column_type))


REQUIRED_COLUMNS = {"prompt_id": _text, "prompt": _text}
OPTIONAL_COLUMNS = {
    "image_size": _text,
    "width": _numeric,
    "height": _numeric,
    "seed": _numeric,
    "num_images": _numeric,
    "output_format": _text,
    "safety_tolerance": lambda t: _text(t) or _numeric(t),
    "enhance_prompt": _flag,
    "redux_image": _text,
    "redux_prompt": _text,
    "num_inference_steps": _numeric,
    "guidance_scale": _numeric,
    "model": _text,
    "redux_model": _text,
    "aspect_ratio": _text,
    "raw": _flag,
    "draft_image_id": _text,
}
AXIS_PREFIX = "axis_"
"""`axis_NAME` text columns (a recipe writes one per axis) describe the row; the catalog keeps them."""
WHOLE_NUMBER_COLUMNS = ("width", "height", "seed", "num_images", "safety_tolerance", "num_inference_steps")
"""Columns whose values must be whole numbers: a float value that is not is a reject of its row."""
REQUEST_FIELDS = (
    "seed",
    "num_images",
    "output_format",
    "safety_tolerance",
    "enhance_prompt",
    "aspect_ratio",
    "raw",
)
REDUX_FIELDS = ("redux_prompt", "num_inference_steps", "guidance_scale")
"""Fields of the Redux request; `num_inference_steps` and `guidance_scale` go to the row's
text-to-image request too when its model takes them (FLUX.1 [dev], [schnell])."""


class PromptTableError(ValueError):
    """The table as a whole cannot be read; the message names the file and the problem."""

    kind = "prompt table"

    def __init__(self, path: UPath, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{self.kind} {path}: {problem}")


@dataclass(frozen=True)
class ReduxVariation:
    """A row's Redux variation: its input (image_url filled in when the request is planned), the
    image it varies and the Redux endpoint."""

    input: FluxInput
    source: str
    """`generated`, an http(s) URL, a `data:` URI, or the location of a file inside the prompts
    folder."""
    model: str = REDUX


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str
    text_to_image: FluxInput
    model: str = TEXT_TO_IMAGE
    """The text-to-image endpoint (fal.models.TEXT_TO_IMAGE_ENDPOINTS)."""
    redux: ReduxVariation | None = None
    axes: str | None = None
    """The row's `axis_*` values as a JSON object {axis: value}, None when the table has none."""
    draft_image_id: str | None = None
    """The draft image this (final) row renders again (a final recipe's rows name it)."""


@dataclass(frozen=True)
class Reject:
    row: int
    prompt_id: str | None
    field: str
    reason: str


def open_prompt_table(path: UPath) -> pq.ParquetFile:
    """The table, after checking from its metadata alone that it is Parquet with rows and the
    known columns of the right types (rows are read later, a batch at a time)."""
    if not path.is_file():
        raise PromptTableError(path, "file not found")
    try:
        table = parquet_file(path)
    except (pa.ArrowException, OSError) as exc:
        raise PromptTableError(path, f"not a readable Parquet file ({exc})") from None
    schema = table.schema_arrow
    known: dict = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise PromptTableError(path, f"missing required column(s) {', '.join(missing)}")
    known.update({name: _text for name in schema.names if name.startswith(AXIS_PREFIX)})
    unknown = [name for name in schema.names if name not in known]
    if unknown:
        raise PromptTableError(path, f"unknown column(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name in schema.names:
        column_type = schema.field(name).type
        if not (pa.types.is_null(column_type) or known[name](column_type)):
            raise PromptTableError(path, f"column {name!r} has type {column_type}, which does not fit")
    if table.metadata.num_rows == 0:
        raise PromptTableError(path, "the table has no rows")
    return table


Row = dict[str, Any]
"""A table row as Arrow gives it in plain Python (RecordBatch.to_pylist): None where missing."""


def _value(row: Row, name: str):
    """The row's value (None when missing or NaN); a whole number where one is expected."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if name in WHOLE_NUMBER_COLUMNS and isinstance(value, float):
        if not value.is_integer():
            raise _RowError(name, f"must be a whole number, not {value}")
        return int(value)
    return value


def plan_rows(
    table: pq.ParquetFile, path: UPath, defaults: dict, prompts_dir: UPath, batch_rows: int = 1024
) -> Iterator[PromptRow | Reject]:
    """Validate every row of `table` (opened from `path`) on its own: good rows become requests,
    bad rows become rejects. A batch that cannot be read raises PromptTableError."""
    seen: set[str] = set()
    offset = 0
    for batch in _batches(table, path, batch_rows):
        for position, row in enumerate(batch.to_pylist()):
            prompt_id = _value(row, "prompt_id")
            try:
                if prompt_id is None or not str(prompt_id).strip():
                    raise _RowError("prompt_id", "must not be empty")
                if prompt_id in seen:
                    raise _RowError("prompt_id", f"duplicate of an earlier row's prompt_id {prompt_id!r}")
                yield _plan_row(row, str(prompt_id), defaults, prompts_dir)
                seen.add(prompt_id)
            except _RowError as exc:
                yield Reject(offset + position, prompt_id, exc.field, exc.reason)
        offset += batch.num_rows


def _batches(table: pq.ParquetFile, path: UPath, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The table's rows a batch at a time, dictionary columns decoded and every string type read
    as `string`. A page that cannot be read (valid footer, corrupt data) is the table's error."""
    batches, offset = table.iter_batches(batch_size=batch_rows), 0
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise PromptTableError(path, f"rows from {offset} on cannot be read ({exc})") from None
        if batch is None:
            return
        offset += batch.num_rows
        columns = [
            column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
            for column in batch.columns
        ]
        yield pa.RecordBatch.from_arrays(
            [column.cast(pa.string()) if _text(column.type) else column for column in columns],
            names=batch.schema.names,
        )


class _RowError(Exception):
    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason


def _plan_row(row: Row, prompt_id: str, defaults: dict, prompts_dir: UPath) -> PromptRow:
    model = _model(row, "model", TEXT_TO_IMAGE_ENDPOINTS, TEXT_TO_IMAGE)
    given = {
        **_image_size(row),
        **{name: v for name in REQUEST_FIELDS if (v := _value(row, name)) is not None},
    }
    extra = {name: value for name in REDUX_FIELDS if (value := _value(row, name)) is not None}
    prompt = _value(row, "prompt") or ""
    steps = {name: value for name, value in extra.items() if takes(model, name)}
    text_to_image = _validated(model, {**_defaults_for(model, defaults), "prompt": prompt, **given, **steps})
    source = _value(row, "redux_image")
    axes, draft = _axes(row), _value(row, "draft_image_id")
    if source is None:
        if unused := [name for name in extra if name not in steps]:
            raise _RowError("redux_image", f"required when {', '.join(unused)} is set")
        return PromptRow(prompt_id, text_to_image, model=model, axes=axes, draft_image_id=draft)
    redux_model = _model(row, "redux_model", REDUX_ENDPOINTS, ULTRA_REDUX if model == ULTRA else REDUX)
    redux_prompt = extra.pop("redux_prompt", None) or ""
    request = {**_defaults_for(redux_model, defaults), **given, **extra, "prompt": redux_prompt}
    redux = _validated(redux_model, {**request, "image_url": "pending:upload"})
    variation = ReduxVariation(redux, _resolve_source(source, prompts_dir), redux_model)
    return PromptRow(prompt_id, text_to_image, model, variation, axes, draft)


def _axes(row: Row) -> str | None:
    names = [name for name in row if name.startswith(AXIS_PREFIX)]
    axes = {name.removeprefix(AXIS_PREFIX): _value(row, name) for name in names}
    return json.dumps(axes) if axes else None


def _model(row: Row, column: str, known: tuple[str, ...], default: str) -> str:
    """The row's endpoint in `column`, one of `known` (the default when the row names none)."""
    model = _value(row, column) or default
    if model not in known:
        raise _RowError(column, f"unknown model {model!r}; expected one of {', '.join(known)}")
    return model


def _defaults_for(endpoint: str, defaults: dict) -> dict:
    """The table-level defaults the endpoint takes (ultra has no `image_size`, FLUX.1 no
    `safety_tolerance`): a default never makes a row invalid; a row's own value may."""
    return {name: value for name, value in defaults.items() if takes(endpoint, name)}


def _image_size(row: Row) -> dict:
    """The row's `image_size` (a preset, or its width and height), when it gives one."""
    width, height, preset = _value(row, "width"), _value(row, "height"), _value(row, "image_size")
    if (width is None) != (height is None):
        raise _RowError("width" if width is None else "height", "width and height must be given together")
    if width is not None and preset is not None:
        raise _RowError("image_size", "give either image_size or width/height, not both")
    if width is not None:
        return {"image_size": {"width": width, "height": height}}
    return {} if preset is None else {"image_size": preset}


def _validated(endpoint: str, request: dict):
    try:
        return validate_input(endpoint, request)
    except FalInputError as exc:
        field, reason = exc.errors[0]
        raise _RowError(_column(field), reason) from None


def _column(field: str) -> str:
    """The table column behind a model field: `image_size.custom.width` comes from `width`."""
    parts = field.split(".")
    return parts[-1] if parts[0] == "image_size" and parts[-1] in ("width", "height") else parts[0]


def _resolve_source(source: str, prompts_dir: UPath) -> str:
    """Redux sources: the row's generated image, an http(s) URL, a `data:` URI of an image (both
    sent as they are), or a file inside the prompts folder, named relative to it (a table must
    not make the pipeline read and upload arbitrary files)."""
    if any(ord(character) < 32 or ord(character) == 127 for character in source):
        raise _RowError("redux_image", f"{source[:80]!r} contains a control character")
    if source == GENERATED or source.startswith(("http://", "https://")):
        return source
    if source.startswith("data:"):
        _check_data_uri(source)
        return source
    relative = PurePosixPath(source)
    escapes = "://" in source or relative.is_absolute() or ".." in relative.parts
    path = prompts_dir if escapes else prompts_dir / relative.as_posix()
    if escapes or file_inside(path, prompts_dir) is None:
        raise _RowError("redux_image", f"local image {source!r} is not a path inside the prompts folder")
    if not path.is_file():
        raise _RowError("redux_image", f"local image {source!r} not found in {prompts_dir}")
    return str(path)


def _check_data_uri(source: str) -> None:
    try:
        _, media_type = decode_data_uri(source)
    except FalError as exc:
        raise _RowError("redux_image", f"not a usable data URI: {exc}") from None
    if not media_type.startswith("image/"):
        raise _RowError("redux_image", f"the data URI holds {media_type!r}, not an image")


def file_inside(path: UPath, folder: UPath) -> UPath | None:
    """`path` with any symlinks followed, when it lies inside `folder`; None when it leads out.
    Checked where a Redux file is named and again where it is read (a file can be replaced by a
    symlink in between)."""
    if is_local(path):
        real = path.resolve()
        return real if real.is_relative_to(folder.resolve()) else None
    inside = path.protocol == folder.protocol and PurePosixPath(path.path).is_relative_to(folder.path)
    return path if inside and ".." not in PurePosixPath(path.path).parts else None


PROMPT_ROW_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("text_to_image", pa.string()),
        ("redux", pa.string()),
        ("redux_source", pa.string()),
        ("model", pa.string()),
        ("redux_model", pa.string()),
        ("axes", pa.string()),
        ("draft_image_id", pa.string()),
    ]
)


def prompt_row_record(row: PromptRow) -> dict:
    """One row of prompts.parquet: what will be sent, as JSON."""
    return {
        "prompt_id": row.prompt_id,
        "text_to_image": json.dumps(row.text_to_image.wire()),
        "redux": json.dumps(row.redux.input.wire()) if row.redux else None,
        "redux_source": row.redux.source if row.redux else None,
        "model": row.model,
        "redux_model": row.redux.model if row.redux else None,
        "axes": row.axes,
        "draft_image_id": row.draft_image_id,
    }


def read_prompt_rows(files: PartitionFiles) -> Iterator[PromptRow]:
    """The partition's validated rows (prompts.parquet), read a batch at a time."""
    for batch in parquet_file(files.prompts).iter_batches(batch_size=1024):
        yield from map(prompt_row_from_record, batch.to_pylist())


def prompt_row_from_record(record: dict) -> PromptRow:
    """A row of prompts.parquet; one written before rows named a model is FLUX1.1 [pro]'s."""
    redux, model = record.get("redux"), record.get("model") or TEXT_TO_IMAGE
    redux_model = record.get("redux_model") or REDUX
    text_to_image = input_model(model).model_validate_json(record["text_to_image"])
    axes, draft = record.get("axes"), record.get("draft_image_id")
    if not redux:
        return PromptRow(record["prompt_id"], text_to_image, model, None, axes, draft)
    variation = ReduxVariation(
        input_model(redux_model).model_validate_json(redux), record["redux_source"], redux_model
    )
    return PromptRow(record["prompt_id"], text_to_image, model, variation, axes, draft)
