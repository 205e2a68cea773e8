"""Result files: checked without decoding (cut, corrupted, wrong size or format, decompression
bombs are all rejected), and downloads that stop at the size limit, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from base64 import b64encode

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flux_pipeline.emulator import engine
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.images import image_digest, render_image
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.client import FalClient
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.fal.errors import FileTooLarge
from flux_pipeline.fal.http_server import BackgroundServer
from flux_pipeline.fal.models import TEXT_TO_IMAGE, TextToImageInput
from flux_pipeline.fal.types import Generation, GenerationFailure, GenerationRequest
from flux_pipeline.fal.verify import InvalidImageError, verify_image

from .conftest import SECRET_KEY, resource_for
from .test_resource import t2i_requests

SIZE = (64, 48)
MIME = {"jpeg": "image/jpeg", "png": "image/png"}


def rendered(output_format: str, size: tuple[int, int] = SIZE) -> bytes:
    return render_image(image_digest({"test": output_format}, 0), *size, output_format)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side pixels (400 megapixels at the default) in about 48 KB."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def check(data: bytes, output_format: str, size: tuple[int, int] = SIZE) -> None:
    verify_image(data, MIME[output_format], output_format=output_format, size=size)


@pytest.mark.parametrize("output_format", ["jpeg", "png"])
def test_a_whole_image_of_the_asked_size_passes(output_format):
    check(rendered(output_format), output_format)


@pytest.mark.parametrize("output_format", ["jpeg", "png"])
def test_every_cut_of_an_image_is_rejected(output_format):
    data = rendered(output_format)
    for length in range(len(data)):
        with pytest.raises(InvalidImageError):
            check(data[:length], output_format)


def test_a_corrupted_png_chunk_is_rejected():
    data = bytearray(rendered("png"))
    data[len(data) // 2] ^= 0x40  # inside IDAT: its CRC no longer matches
    with pytest.raises(InvalidImageError, match="CRC"):
        check(bytes(data), "png")
    with pytest.raises(InvalidImageError, match="after IEND"):
        check(rendered("png") + b"trailing", "png")


@pytest.mark.parametrize("output_format", ["jpeg", "png"])
def test_wrong_size_format_or_content_type_is_rejected(output_format):
    other = "png" if output_format == "jpeg" else "jpeg"
    with pytest.raises(InvalidImageError, match="expected 48x64"):
        check(rendered(output_format), output_format, size=(48, 64))
    with pytest.raises(InvalidImageError, match=f"not a {output_format} image"):
        verify_image(rendered(other), MIME[output_format], output_format=output_format, size=SIZE)
    with pytest.raises(InvalidImageError, match="content type"):
        verify_image(rendered(output_format), MIME[other], output_format=output_format, size=SIZE)


def test_a_decompression_bomb_is_an_invalid_image():
    bomb = png_bomb()
    assert len(bomb) < 64_000
    with pytest.raises(InvalidImageError):
        check(bomb, "png", size=(20_000, 20_000))  # even when that size was asked for
    with pytest.raises(InvalidImageError):
        check(bomb, "png")


def test_a_decompression_bomb_served_as_a_result_fails_that_row_only(monkeypatch):
    bomb = png_bomb()
    real_render = engine.render_image
    monkeypatch.setattr(
        engine,
        "render_image",
        lambda digest, w, h, fmt, *detail: bomb if fmt == "png" else real_render(digest, w, h, fmt, *detail),
    )
    planned = [
        GenerationRequest(
            f"row-{i}", TEXT_TO_IMAGE, TextToImageInput(prompt=f"prompt {i}", output_format=fmt)
        )
        for i, fmt in enumerate(["jpeg", "png", "jpeg"])
    ]
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server:
        outcomes = {o.request.prompt_id: o for o in resource_for(server).generate(planned)}
    assert isinstance(outcomes["row-1"], GenerationFailure)
    assert "InvalidImageError" in outcomes["row-1"].error
    assert isinstance(outcomes["row-0"], Generation) and isinstance(outcomes["row-2"], Generation)


def test_a_download_cut_every_time_fails_after_four_attempts_and_a_cut_once_is_fetched_again():
    with EmulatorServer(EmulatorConfig(latency=0.02, faults=FaultConfig(corrupt_download=1.0))) as server:
        [outcome] = resource_for(server).generate(t2i_requests(1, image_size="square"))
        downloads = server.emulator.calls["download"]
    assert isinstance(outcome, GenerationFailure) and "not whole" in outcome.error
    assert downloads == 4
    with EmulatorServer(
        EmulatorConfig(latency=0.02, faults=FaultConfig(corrupt_download=0.5, seed=0))
    ) as server:
        planned = t2i_requests(12, image_size="square")
        outcomes = list(resource_for(server, max_concurrency=1).generate(planned))  # the seed decides
        stats = server.emulator.stats()
    assert all(isinstance(o, Generation) for o in outcomes)
    assert stats["faults_injected"]["corrupt_download"] > 0
    assert stats["http_calls"]["download"] == 12 + stats["faults_injected"]["corrupt_download"]


def test_a_file_over_the_limit_fails_its_row_at_once():
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server:
        [outcome] = resource_for(server).generate(t2i_requests(1, image_size="square"), max_file_bytes=1000)
        downloads = server.emulator.calls["download"]
    assert isinstance(outcome, GenerationFailure) and "1000-byte limit" in outcome.error
    assert downloads == 1, "a file too large is not fetched again"


MEGABYTE = 1 << 20


def huge_file_app(sent: list[int]) -> Starlette:
    """/declared answers 500 MB with its Content-Length; /chunked streams 500 MB without one.
    Both stop once the client has gone; `sent` counts the megabytes they produced."""

    async def chunks(request):
        for _ in range(500):
            if await request.is_disconnected():
                return
            sent.append(1)
            yield b"\xff" * MEGABYTE

    async def declared(request):
        return StreamingResponse(
            chunks(request), media_type="image/jpeg", headers={"content-length": str(500 * MEGABYTE)}
        )

    async def chunked(request):
        return StreamingResponse(chunks(request), media_type="image/jpeg")

    async def small(request):
        return Response(b"\xff" * 1000, media_type="image/jpeg")

    return Starlette(
        routes=[Route("/declared", declared), Route("/chunked", chunked), Route("/small", small)]
    )


@pytest.mark.parametrize("path", ["declared", "chunked"])
def test_a_500_mb_download_stops_at_the_limit(path):
    sent: list[int] = []
    with BackgroundServer(huge_file_app(sent)) as server:

        async def fetch():
            async with FalClient(SECRET_KEY, FalUrls.single_base(server.url)) as fal:
                with pytest.raises(FileTooLarge) as caught:
                    await fal.download(f"{server.url}/{path}", max_bytes=4 * MEGABYTE)
                small = await fal.download(f"{server.url}/small", max_bytes=1000)
                return caught.value, small

        error, small = asyncio.run(fetch())
    assert error.max_bytes == 4 * MEGABYTE and error.size > error.max_bytes
    assert small == (b"\xff" * 1000, "image/jpeg"), "a file of exactly the limit is kept"
    assert len(sent) < 50, f"the server produced {len(sent)} MB: reading did not stop at the limit"


def test_a_data_uri_over_the_limit_is_rejected():
    blob = io.BytesIO()
    Image.new("RGB", (8, 8)).save(blob, format="PNG")
    uri = "data:image/png;base64," + b64encode(blob.getvalue()).decode()

    async def fetch():
        async with FalClient(SECRET_KEY) as fal:
            assert (await fal.download(uri, max_bytes=10_000))[0] == blob.getvalue()
            await fal.download(uri, max_bytes=10)

    with pytest.raises(FileTooLarge, match="a data URI"):
        asyncio.run(fetch())
