"""fal's storage over an Emulator: two-step uploads and their token under /storage, the CDN
upload under /files, and the files the emulator serves (uploads and result images)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .engine import Emulator
from .errors import ApiError, require_key


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class StorageApi:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.pending_uploads: dict[str, str] = {}
        """The content type each initiated, not yet sent, upload declared, by file id."""

    def routes(self) -> list[Route]:
        return [
            Route("/storage/upload/initiate", self.upload_initiate, methods=["POST"]),
            Route("/storage/upload/put/{file_id}", self.upload_put, methods=["PUT"]),
            Route("/storage/auth/token", self.storage_token, methods=["POST"]),
            Route("/files/upload", self.cdn_upload, methods=["POST"]),
            Route("/files/{file_id}/{name}", self.serve_file, methods=["GET"]),
        ]

    async def upload_initiate(self, request: Request) -> Response:
        require_key(request)
        body = await request.json()
        file_id = f"upload-{uuid.uuid4()}"
        self.pending_uploads[file_id] = body.get("content_type") or "application/octet-stream"
        base = base_url(request)
        upload_url, file_url = f"{base}/storage/upload/put/{file_id}", f"{base}/files/{file_id}/upload"
        return JSONResponse({"upload_url": upload_url, "file_url": file_url})

    async def upload_put(self, request: Request) -> Response:
        declared = self.pending_uploads.pop(request.path_params["file_id"], None)
        if declared is None:
            raise ApiError(404, "Unknown upload")
        content_type = request.headers.get("content-type") or declared
        self.emulator.store_file(request.path_params["file_id"], await request.body(), content_type)
        return Response(status_code=200)

    async def storage_token(self, request: Request) -> Response:
        require_key(request)
        expires = datetime.now(UTC) + timedelta(hours=1)
        return JSONResponse(
            {
                "token": uuid.uuid4().hex,
                "token_type": "Bearer",
                "base_url": base_url(request),
                "expires_at": expires.isoformat(),
            }
        )

    async def cdn_upload(self, request: Request) -> Response:
        require_key(request)
        file_id = f"upload-{uuid.uuid4()}"
        content_type = request.headers.get("content-type", "application/octet-stream")
        self.emulator.store_file(file_id, await request.body(), content_type)
        return JSONResponse({"access_url": f"{base_url(request)}/files/{file_id}/upload"})

    async def serve_file(self, request: Request) -> Response:
        stored = self.emulator.files.get(request.path_params["file_id"])
        if stored is None:
            raise ApiError(404, "File not found")
        return Response(stored.data, media_type=stored.content_type)
