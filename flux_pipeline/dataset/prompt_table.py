"""Reading a prompt table and turning its rows into validated requests or rejects."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from ..fal.client import validate_input
from ..fal.errors import FalInputError
from ..fal.models import REDUX, TEXT_TO_IMAGE, ReduxInput, TextToImageInput
from .storage import is_local, parquet_file

GENERATED = "generated"
"""`redux_image` value asking to vary the row's own first generated image."""

REQUIRED_COLUMNS = {"prompt_id": pa.types.is_string, "prompt": pa.types.is_string}
OPTIONAL_COLUMNS = {
    "image_size": pa.types.is_string,
    "width": pa.types.is_integer,
    "height": pa.types.is_integer,
    "seed": pa.types.is_integer,
    "num_images": pa.types.is_integer,
    "output_format": pa.types.is_string,
    "safety_tolerance": lambda t: pa.types.is_string(t) or pa.types.is_integer(t),
    "enhance_prompt": pa.types.is_boolean,
    "redux_image": pa.types.is_string,
    "redux_prompt": pa.types.is_string,
    "num_inference_steps": pa.types.is_integer,
    "guidance_scale": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
}
REQUEST_FIELDS = ("seed", "num_images", "output_format", "safety_tolerance", "enhance_prompt")


class PromptTableError(ValueError):
    """The table as a whole cannot be read; the message names the file and the problem."""

    def __init__(self, path: UPath, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"prompt table {path}: {problem}")


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str
    text_to_image: TextToImageInput
    redux: ReduxInput | None = None
    redux_source: str | None = None
    """`generated`, an http(s) URL, or the location of a file inside the prompts folder."""


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
    known = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise PromptTableError(path, f"missing required column(s) {', '.join(missing)}")
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


def _value(row: pd.Series, name: str):
    value = row.get(name)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def plan_rows(
    table: pq.ParquetFile, defaults: dict, prompts_dir: UPath, batch_rows: int = 1024
) -> Iterator[PromptRow | Reject]:
    """Validate every row on its own: good rows become requests, bad rows become rejects."""
    seen: set[str] = set()
    offset = 0
    for batch in table.iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
        for position, (_, row) in enumerate(frame.iterrows()):
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


class _RowError(Exception):
    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason


def _plan_row(row: pd.Series, prompt_id: str, defaults: dict, prompts_dir: UPath) -> PromptRow:
    request = dict(defaults)
    request["prompt"] = _value(row, "prompt") or ""
    width, height, preset = _value(row, "width"), _value(row, "height"), _value(row, "image_size")
    if (width is None) != (height is None):
        raise _RowError("width" if width is None else "height", "width and height must be given together")
    if width is not None and preset is not None:
        raise _RowError("image_size", "give either image_size or width/height, not both")
    if width is not None:
        request["image_size"] = {"width": width, "height": height}
    elif preset is not None:
        request["image_size"] = preset
    for name in REQUEST_FIELDS:
        if (value := _value(row, name)) is not None:
            request[name] = value
    text_to_image = _validated(TEXT_TO_IMAGE, request)

    source = _value(row, "redux_image")
    redux_fields = {
        name: _value(row, name) for name in ("redux_prompt", "num_inference_steps", "guidance_scale")
    }
    if source is None:
        given = [name for name, value in redux_fields.items() if value is not None]
        if given:
            raise _RowError("redux_image", f"required when {', '.join(given)} is set")
        return PromptRow(prompt_id, text_to_image)
    redux_request = {**request, "prompt": redux_fields["redux_prompt"] or "", "image_url": "pending:upload"}
    for name in ("num_inference_steps", "guidance_scale"):
        if redux_fields[name] is not None:
            redux_request[name] = redux_fields[name]
    redux = _validated(REDUX, redux_request)
    return PromptRow(prompt_id, text_to_image, redux, _resolve_source(source, prompts_dir))


def _validated(endpoint: str, request: dict):
    try:
        return validate_input(endpoint, request)
    except FalInputError as exc:
        field, reason = exc.errors[0]
        column = {"image_size.width": "width", "image_size.height": "height"}.get(field, field.split(".")[0])
        raise _RowError(column, reason) from None


def _resolve_source(source: str, prompts_dir: UPath) -> str:
    """Redux sources: the row's generated image, an http(s) URL, or a file inside the prompts
    folder, named relative to it (a table must not make the pipeline read and upload arbitrary
    files)."""
    if source == GENERATED or source.startswith(("http://", "https://")):
        return source
    relative = PurePosixPath(source)
    escapes = "://" in source or relative.is_absolute() or ".." in relative.parts
    path = prompts_dir if escapes else prompts_dir / relative.as_posix()
    if escapes or (
        is_local(path) and not path.resolve().is_relative_to(prompts_dir.resolve())
    ):  # a symlink out
        raise _RowError("redux_image", f"local image {source!r} is not a path inside the prompts folder")
    if not path.is_file():
        raise _RowError("redux_image", f"local image {source!r} not found in {prompts_dir}")
    return str(path)


PROMPT_ROW_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("text_to_image", pa.string()),
        ("redux", pa.string()),
        ("redux_source", pa.string()),
    ]
)


def prompt_row_record(row: PromptRow) -> dict:
    """One row of prompts.parquet: what will be sent, as JSON."""
    return {
        "prompt_id": row.prompt_id,
        "text_to_image": json.dumps(row.text_to_image.wire()),
        "redux": json.dumps(row.redux.wire()) if row.redux else None,
        "redux_source": row.redux_source,
    }


def prompt_row_from_record(record: dict) -> PromptRow:
    redux = record.get("redux")
    return PromptRow(
        record["prompt_id"],
        TextToImageInput.model_validate_json(record["text_to_image"]),
        ReduxInput.model_validate_json(redux) if redux else None,
        record.get("redux_source"),
    )
