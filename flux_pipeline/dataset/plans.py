"""The requests a partition's validated rows ask for, as fal batch jobs: one text-to-image job per
row, and one Redux job per row with a `redux_image`. Each job carries its ledger fingerprint and,
for Redux, its lineage."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from upath import UPath

from ..fal.batch import GenerationJob
from ..fal.models import REDUX, TEXT_TO_IMAGE
from .files import sha256_of
from .ledger import fingerprint
from .prompt_table import GENERATED, PromptRow
from .storage import open_location


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
    """The image a Redux row varies: a file to upload or a URL to send, and what stands for it in
    the fingerprint (an uploaded file's content hash, so a re-upload is the same request)."""

    identity: str
    lineage: Lineage
    upload_path: UPath | None = None
    url: str | None = None


def text_to_image_job(row: PromptRow) -> GenerationJob:
    data = row.text_to_image
    return GenerationJob(row.prompt_id, TEXT_TO_IMAGE, data, fingerprint(TEXT_TO_IMAGE, data.wire()))


def redux_job(row: PromptRow, source: ReduxSource) -> GenerationJob:
    data = row.redux if source.upload_path else row.redux.model_copy(update={"image_url": source.url})
    return GenerationJob(
        row.prompt_id,
        REDUX,
        data,
        fingerprint(REDUX, {**row.redux.wire(), "image_url": source.identity}),
        upload_path=source.upload_path,
        origin=source.lineage,
    )


def redux_jobs(
    rows: Iterable[PromptRow], outputs_dir: UPath, first_images: Callable[[], dict[str, dict]]
) -> Iterator[GenerationJob | RowFailure]:
    """`first_images()`: prompt_id → the row's first generated image (catalog columns image_id,
    file_path, content_hash); called once, and only if a row varies its generated image."""
    parents = None
    for row in rows:
        if row.redux is None:
            continue
        if row.redux_source == GENERATED:
            parents = first_images() if parents is None else parents
            if (parent := parents.get(row.prompt_id)) is None:
                yield RowFailure(row.prompt_id, REDUX, "redux_image", "the row's generated image is missing")
                continue
            source = ReduxSource(
                parent["content_hash"],
                Lineage(parent_image_id=parent["image_id"]),
                upload_path=outputs_dir / parent["file_path"],
            )
        elif row.redux_source.startswith(("http://", "https://")):
            source = ReduxSource(
                row.redux_source, Lineage(parent_source=row.redux_source), url=row.redux_source
            )
        else:
            local = open_location(row.redux_source, outputs_dir.storage_options)
            source = ReduxSource(sha256_of(local), Lineage(parent_source=row.redux_source), upload_path=local)
        yield redux_job(row, source)
