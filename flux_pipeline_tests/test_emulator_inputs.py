"""Input the emulator must refuse as fal would, or refuse because it runs on the pipeline's own
machine: absurd sizes get fal's 422 before anything is rendered, and Redux sources on
non-public addresses are never fetched, not even through a redirect."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import time
from collections import Counter

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from flux_pipeline.emulator.app import create_app
from flux_pipeline.emulator.engine import Emulator, EmulatorConfig
from flux_pipeline.fal.client import FalClient
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.fal.errors import FalApiError
from flux_pipeline.fal.http_server import BackgroundServer
from flux_pipeline.fal.models import REDUX, TEXT_TO_IMAGE, FluxOutput

from .conftest import SECRET_KEY, urls_for

ALLOWED_HOST = "127.0.0.2"
"""Stands for a public address in the redirect tests: the only one their emulator may fetch from."""


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_host(host: str = "127.0.0.1", redirect_to: str | None = None) -> BackgroundServer:
    """Serves /image.png, /hop (a redirect to /image.png), /loop (a redirect to itself) and /away
    (a redirect to `redirect_to`); counts the calls by path in `.hits`."""
    hits: Counter = Counter()

    async def serve(request: Request) -> Response:
        path = request.url.path
        hits[path] += 1
        targets = {"/hop": "/image.png", "/loop": "/loop", "/away": redirect_to}
        if path in targets:
            return RedirectResponse(targets[path], status_code=302)
        return Response(png(), media_type="image/png")

    server = BackgroundServer(Starlette(routes=[Route("/{path:path}", serve)]), host=host)
    server.hits = hits
    return server


def redux(emulator_url: str, image_url: str) -> FluxOutput:
    async def call():
        async with FalClient(SECRET_KEY, FalUrls.single_base(emulator_url)) as fal:
            _, output = await fal.subscribe(REDUX, {"image_url": image_url, "image_size": "square"})
            return output

    return asyncio.run(call())


def refusal(emulator_url: str, image_url: str) -> str:
    with pytest.raises(FalApiError) as caught:
        redux(emulator_url, image_url)
    assert caught.value.status_code == 422 and caught.value.field_errors[0][0] == "image_url"
    return caught.value.field_errors[0][1]


@pytest.fixture
def loosened_emulator():
    """An emulator that may fetch from ALLOWED_HOST, as if it were a public address."""
    emulator = Emulator(
        EmulatorConfig(latency=0.02),
        source_address_allowed=lambda address: address == ipaddress.ip_address(ALLOWED_HOST),
    )
    with BackgroundServer(create_app(emulator)) as server:
        yield server


def test_a_redux_source_on_a_loopback_address_is_refused_unfetched(emulator):
    with image_host() as private:
        reason = refusal(emulator.url, f"{private.url}/image.png")
    assert "non-public address(es) 127.0.0.1" in reason
    assert private.hits == {}, "the emulator never called it"
    assert emulator.emulator.stats()["images_billed"] == 0


def test_a_redirect_from_an_allowed_host_to_a_loopback_address_is_refused(loosened_emulator):
    with image_host() as private, image_host(ALLOWED_HOST, redirect_to=f"{private.url}/image.png") as hop:
        reason = refusal(loosened_emulator.url, f"{hop.url}/away")
        assert "non-public address(es) 127.0.0.1" in reason
        assert hop.hits == {"/away": 1} and private.hits == {}


def test_redirects_on_allowed_hosts_are_followed_a_bounded_number_of_times(loosened_emulator):
    with image_host(ALLOWED_HOST) as public:
        output = redux(loosened_emulator.url, f"{public.url}/hop")
        assert len(output.images) == 1 and public.hits == {"/hop": 1, "/image.png": 1}
        assert "more than 5 redirects" in refusal(loosened_emulator.url, f"{public.url}/loop")
        assert public.hits["/loop"] == 6


def test_a_file_the_emulator_serves_itself_is_the_one_local_source_it_takes(emulator):
    async def upload_then_vary():
        async with FalClient(SECRET_KEY, urls_for(emulator)) as fal:
            url = await fal.upload(png(), "image/png", "mine.png")
            return await fal.subscribe(REDUX, {"image_url": url, "image_size": "square"})

    _, output = asyncio.run(upload_then_vary())
    assert len(output.images) == 1


def test_an_absurd_size_sent_anyway_gets_fals_422_and_is_never_rendered(emulator):
    """The client refuses it before sending; a raw call shows the emulator's own answer."""
    body = {"prompt": "x", "image_size": {"width": 100_000, "height": 100_000}}
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Key {SECRET_KEY}"}) as http:
        request_id = http.post(f"/{TEXT_TO_IMAGE}", json=body).json()["request_id"]
        status = f"/fal-ai/flux-pro/requests/{request_id}/status"
        deadline = time.monotonic() + 10
        while http.get(status).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline, "the request never completed"
            time.sleep(0.05)
        result = http.get(f"/fal-ai/flux-pro/requests/{request_id}")
    assert result.status_code == 422
    assert [(e["loc"], e["msg"]) for e in result.json()["detail"]] == [
        (["body", "image_size", "custom", "width"], "Input should be less than or equal to 14142"),
        (["body", "image_size", "custom", "height"], "Input should be less than or equal to 14142"),
    ]
    assert emulator.emulator.stats()["images_billed"] == 0
