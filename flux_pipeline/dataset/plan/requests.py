"""The requests to fal a partition's validated rows ask for: one text-to-image request per row (on
the row's model), and one Redux request per row with a `redux_image` (on its Redux model).
Each request carries its ledger fingerprint and, for Redux, its lineage."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from upath import UPath

from ...fal.data_uri import decode_data_uri
from ...fal.types import GenerationRequest
from ..files.images import sha256_of
from ..files.storage import open_location
from ..money.ledger import fingerprint
from .prompt_table import GENERATED, PromptRow, ReduxVariation, file_inside


@dataclass(frozen=True)
class Lineage:
    """What a Redux variation varies: a catalog image, or a path or URL outside the catalog."""

    parent_image_id: str | None = None
    parent_source: str | None = None


@dataclass(frozen=True)
class RowFailure:
    """A row that failed before any request was made for it."""

    prompt_id: str
    endpoint: str
    field: str
    error: str


@dataclass(frozen=True)
class ReduxSource:
    """The image a Redux row varies: a file to upload or a URL (or data URI) to send, and what
    stands for it in the fingerprint (the content hash of an uploaded file or of a data URI's data,
    so a re-upload is the same request)."""

    identity: str
    lineage: Lineage
    upload_path: UPath | None = None
    url: str | None = None


def text_to_image_request(row: PromptRow) -> GenerationRequest:
    data = row.text_to_image
    return GenerationRequest(row.prompt_id, row.model, data, fingerprint(row.model, data.wire()))


def redux_request(prompt_id: str, redux: ReduxVariation, source: ReduxSource) -> GenerationRequest:
    data = redux.input if source.upload_path else redux.input.model_copy(update={"image_url": source.url})
    return GenerationRequest(
        prompt_id,
        redux.model,
        data,
        fingerprint(redux.model, {**redux.input.wire(), "image_url": source.identity}),
        upload_path=source.upload_path,
        origin=source.lineage,
    )


def redux_requests(
    rows: Iterable[PromptRow],
    outputs_dir: UPath,
    prompts_dir: UPath,
    first_images: Callable[[], dict[str, dict]],
) -> Iterator[GenerationRequest | RowFailure]:
    """`first_images()`: prompt_id → the row's first generated image (catalog columns image_id,
    file_path, content_hash); called once, and only if a row varies its generated image. A local
    source is checked again, as it is read, to be a file inside `prompts_dir`."""
    first_images = functools.cache(first_images)
    for row in rows:
        if row.redux is not None:
            source = _redux_source(row.prompt_id, row.redux, outputs_dir, prompts_dir, first_images)
            yield (
                redux_request(row.prompt_id, row.redux, source) if isinstance(source, ReduxSource) else source
            )


def _redux_source(
    prompt_id: str,
    redux: ReduxVariation,
    outputs_dir: UPath,
    prompts_dir: UPath,
    first_images: Callable[[], dict[str, dict]],
) -> ReduxSource | RowFailure:
    source = redux.source
    if source == GENERATED:
        if (parent := first_images().get(prompt_id)) is None:
            return RowFailure(prompt_id, redux.model, "redux_image", "the row's generated image is missing")
        return ReduxSource(
            parent["content_hash"],
            Lineage(parent_image_id=parent["image_id"]),
            upload_path=outputs_dir / parent["file_path"],
        )
    if source.startswith(("http://", "https://")):
        return ReduxSource(source, Lineage(parent_source=source), url=source)
    if source.startswith("data:"):
        return _data_uri_source(source)
    local = file_inside(open_location(source, prompts_dir.storage_options), prompts_dir)
    if local is None or not local.is_file():
        problem = f"local image {source!r} is no longer a file inside the prompts folder"
        return RowFailure(prompt_id, redux.model, "redux_image", problem)
    return ReduxSource(sha256_of(local), Lineage(parent_source=source), upload_path=local)


def _data_uri_source(uri: str) -> ReduxSource:
    """A data URI is sent as it is; its lineage and fingerprint name its content by hash rather
    than carry the whole blob."""
    data, media_type = decode_data_uri(uri)
    digest = hashlib.sha256(data).hexdigest()
    return ReduxSource(digest, Lineage(parent_source=f"data:{media_type};sha256={digest}"), url=uri)
