"""The review server (Starlette): the page, a partition's images and decisions as JSON, the image
files from the dataset's storage (local or fsspec), and `POST .../decisions`, which appends one
decision to the log after checking that the image is in that partition. Errors are JSON
`{"error": ...}` naming what was wrong; a refused request records nothing."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from importlib.resources import files

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..dataset.catalog.decisions import DecisionError, DecisionLog
from ..dataset.files.layout import DatasetLayout
from .guard import SameOriginGuard
from .partition_view import PartitionView, UnknownImage, catalog_partitions, file_path_of, read_partition

PAGE = files(__package__).joinpath("page.html")


@dataclass(frozen=True)
class Review:
    layout: DatasetLayout
    log: DecisionLog
    reviewer: str
    """Recorded as `who` unless the page names a reviewer."""
    partitions: list[str] | None = None
    """The partitions this server reviews; None: every catalog partition."""

    def reviewable(self) -> list[str]:
        return self.partitions or catalog_partitions(self.layout.catalog_dir)

    def view(self, partition: str) -> PartitionView:
        self._check(partition)
        try:
            return read_partition(self.layout.catalog_dir, partition)
        except FileNotFoundError as exc:
            raise LookupError(str(exc)) from None

    def file_path(self, partition: str, image_id: str) -> str:
        self._check(partition)
        try:
            return file_path_of(self.layout.catalog_dir, partition, image_id)
        except FileNotFoundError as exc:
            raise LookupError(str(exc)) from None

    def _check(self, partition: str) -> None:
        if partition not in self.reviewable():
            raise LookupError(f"partition {partition!r} is not reviewed here ({self.reviewable()})")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def make_app(review: Review) -> Starlette:
    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text())

    async def partitions(request: Request) -> Response:
        return JSONResponse({"partitions": review.reviewable(), "reviewer": review.reviewer})

    async def images(request: Request) -> Response:
        partition = request.path_params["partition"]
        try:
            view = review.view(partition)
        except LookupError as exc:
            return _error(str(exc), 404)
        latest = review.log.latest(partition)
        rows = [{**row, "decision": latest.get(row["image_id"])} for row in view.rows]
        return JSONResponse({"partition": partition, "axes": view.axes, "images": rows})

    async def image_file(request: Request) -> Response:
        partition, image_id = request.path_params["partition"], request.path_params["image_id"]
        try:
            file_path = review.file_path(partition, image_id)
        except LookupError as exc:
            return _error(_not_found(exc, partition), 404)
        media_type = mimetypes.guess_type(file_path)[0] or "application/octet-stream"
        data = (review.layout.outputs_dir / file_path).read_bytes()
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    async def decide(request: Request) -> Response:
        return await _decide(review, request)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/partitions", partitions),
            Route("/api/partitions/{partition}/images", images),
            Route("/api/partitions/{partition}/images/{image_id}/file", image_file),
            Route("/api/partitions/{partition}/decisions", decide, methods=["POST"]),
        ],
        middleware=[Middleware(SameOriginGuard)],
    )


def _not_found(exc: LookupError, partition: str) -> str:
    if isinstance(exc, UnknownImage):
        return f"image_id {exc.args[0]!r} is not in partition {partition!r}"
    return str(exc)


async def _decide(review: Review, request: Request) -> Response:
    partition = request.path_params["partition"]
    try:
        body = await request.json()
    except ValueError:
        return _error("the body is not JSON", 400)
    if not isinstance(body, dict) or not isinstance(body.get("image_id"), str):
        return _error("image_id (a string) is required", 400)
    image_id = body["image_id"]
    try:
        view = review.view(partition)
    except LookupError as exc:
        return _error(str(exc), 404)
    if image_id not in view.image_ids:
        return _error(_not_found(UnknownImage(image_id), partition), 404)
    try:
        entry = review.log.record(
            partition,
            image_id,
            str(body.get("decision")),
            reviewer=str(body.get("reviewer") or review.reviewer),
            reason=body.get("reason") if isinstance(body.get("reason"), str) else None,
        )
    except DecisionError as exc:
        return _error(str(exc), 422)
    return JSONResponse(entry)
