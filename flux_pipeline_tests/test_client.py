"""The fal client against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket

import httpx
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.images import render_image
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.client import FalClient
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.fal.errors import FalApiError, FalInputError
from flux_pipeline.fal.models import PRESET_SIZES, REDUX, TEXT_TO_IMAGE
from flux_pipeline.fal.retries import RetryPolicy

from .conftest import SECRET_KEY, decode, urls_for
from .test_models import OUT_OF_RANGE


def run(server, coro_fn, **client_kwargs):
    async def main():
        async with FalClient(SECRET_KEY, urls_for(server), **client_kwargs) as fal:
            return await coro_fn(fal)

    return asyncio.run(main())


def test_text_to_image_round_trip_with_every_field(emulator):
    data = {
        "prompt": "Extreme close-up of a tiger eye",
        "image_size": {"width": 640, "height": 480},
        "seed": 1234,
        "sync_mode": False,
        "num_images": 2,
        "output_format": "png",
        "safety_tolerance": 4,
        "enhance_prompt": True,
    }
    logs = []

    async def flow(fal):
        request_id, output = await fal.subscribe(
            TEXT_TO_IMAGE, data, on_log=lambda rid, line: logs.append((rid, line))
        )
        files = [await fal.download(image.url) for image in output.images]
        return request_id, output, files

    request_id, output, files = run(emulator, flow)
    assert output.seed == 1234
    assert output.prompt.startswith("Extreme close-up of a tiger eye") and output.prompt != data["prompt"]
    assert output.has_nsfw_concepts == [False, False]
    assert [(i.width, i.height, i.content_type) for i in output.images] == [(640, 480, "image/png")] * 2
    for blob, content_type in files:
        assert content_type == "image/png"
        image = decode(blob)
        assert (image.format, image.size) == ("PNG", (640, 480))
    assert files[0][0] != files[1][0], "the images of one request differ"
    assert [line["message"] for _, line in logs] == [f"step {k}/28" for k in range(1, 29)]
    assert {rid for rid, _ in logs} == {request_id}
    assert emulator.emulator.requests[request_id].payload["safety_tolerance"] == "4"


def test_redux_round_trip_with_every_field(emulator):
    async def flow(fal):
        _, parent = await fal.subscribe(TEXT_TO_IMAGE, {"prompt": "a lighthouse", "seed": 7})
        return await fal.subscribe(
            REDUX,
            {
                "image_url": parent.images[0].url,
                "prompt": "at night",
                "image_size": "square",
                "seed": 99,
                "sync_mode": False,
                "num_images": 3,
                "output_format": "jpeg",
                "safety_tolerance": "1",
                "enhance_prompt": False,
                "num_inference_steps": 12,
                "guidance_scale": 7.5,
            },
            on_log=lambda rid, line: logs.append(line["message"]),
        )

    logs: list[str] = []
    _, output = run(emulator, flow)
    assert output.seed == 99 and output.prompt == "at night"
    assert len(output.images) == 3 and output.has_nsfw_concepts == [False] * 3
    assert logs == [f"step {k}/12" for k in range(1, 13)]
    blob = emulator.emulator.own_file(output.images[0].url).data
    assert decode(blob).size == PRESET_SIZES["square"]


@pytest.mark.parametrize("output_format,mime", [("jpeg", "image/jpeg"), ("png", "image/png")])
def test_sync_mode_returns_data_uris(emulator, output_format, mime):
    async def flow(fal):
        _, output = await fal.subscribe(
            TEXT_TO_IMAGE,
            {"prompt": "x", "sync_mode": True, "image_size": "square", "output_format": output_format},
        )
        return output, await fal.download(output.images[0].url)

    output, (blob, content_type) = run(emulator, flow)
    assert output.images[0].url.startswith(f"data:{mime};base64,")
    assert content_type == mime and decode(blob).size == (512, 512)
    assert not emulator.emulator.files, "sync_mode results are not kept in fal's history"


@pytest.mark.parametrize("num_images", [1, 2, 3, 4])
def test_num_images_each_with_one_nsfw_flag(emulator, num_images):
    safe = run(
        emulator, lambda fal: fal.subscribe(TEXT_TO_IMAGE, {"prompt": "a cat", "num_images": num_images})
    )[1]
    flagged = run(
        emulator,
        lambda fal: fal.subscribe(TEXT_TO_IMAGE, {"prompt": "an NSFW cat", "num_images": num_images}),
    )[1]
    assert len(safe.images) == len(safe.has_nsfw_concepts) == num_images
    assert safe.has_nsfw_concepts == [False] * num_images
    assert flagged.has_nsfw_concepts == [True] * num_images


def test_seed_determinism(emulator):
    async def image_hash(fal, **extra):
        _, output = await fal.subscribe(
            TEXT_TO_IMAGE, {"prompt": "a red fox", "image_size": "square", **extra}
        )
        blob, _ = await fal.download(output.images[0].url)
        return output.seed, hashlib.sha256(blob).hexdigest()

    async def flow(fal):
        return [
            await image_hash(fal, seed=42),
            await image_hash(fal, seed=42),
            await image_hash(fal, seed=43),
            await image_hash(fal),
            await image_hash(fal),
        ]

    same_a, same_b, other_seed, random_a, random_b = run(emulator, flow)
    assert same_a == same_b
    assert other_seed[1] != same_a[1]
    assert random_a[0] != random_b[0] and random_a[1] != random_b[1]
    # a server-picked seed, given back, reproduces the image
    replay = run(emulator, lambda fal: image_hash(fal, seed=random_a[0]))
    assert replay == random_a


def test_photo_detail_serves_real_sized_images_as_deterministic_as_flat_ones():
    """What benchmarks measure clients with: a 1024x768 JPEG of a photograph's size (flat ones
    are about 30 KB), the same bytes from another emulator for the same request."""
    request = {"prompt": "a grainy street at dusk", "image_size": "landscape_4_3", "seed": 7}

    async def image(fal):
        _, output = await fal.subscribe(TEXT_TO_IMAGE, request)
        return (await fal.download(output.images[0].url))[0]

    blobs = []
    for detail in ("photo", "photo", "flat"):
        render_image.cache_clear()
        with EmulatorServer(EmulatorConfig(latency=0.01, image_detail=detail)) as server:
            blobs.append(run(server, image))
    photo, again, flat = blobs
    assert photo == again
    assert 150_000 < len(photo) < 400_000 and len(flat) < 60_000
    assert decode(photo).size == decode(flat).size == PRESET_SIZES["landscape_4_3"]
    with pytest.raises(ValueError, match="image_detail"):
        EmulatorConfig(image_detail="film")


@pytest.mark.parametrize("endpoint,data,field", OUT_OF_RANGE)
def test_emulator_answers_422_and_client_refuses_to_send(emulator, endpoint, data, field):
    with pytest.raises(FalInputError):
        run(emulator, lambda fal: fal.submit(endpoint, data))
    assert emulator.emulator.submitted == 0, "the client sent nothing"

    # Sent raw, the input is accepted into the queue and fails at result time (protocol.md 3.5).
    headers = {"Authorization": f"Key {SECRET_KEY}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        request_id = http.post(f"/{endpoint}", json=data).json()["request_id"]
        prefix = f"/fal-ai/flux-pro/requests/{request_id}"
        for _ in range(200):
            state = http.get(f"{prefix}/status").json()
            if state["status"] == "COMPLETED":
                break
            asyncio.run(asyncio.sleep(0.02))
        response = http.get(prefix)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    assert emulator.emulator.stats()["requests_billed"] == 0

    with pytest.raises(FalApiError) as caught:
        run(emulator, lambda fal: fal.result(endpoint, request_id))
    assert caught.value.status_code == 422 and caught.value.field_errors[0][0].startswith(field)


def test_cancel_of_a_queued_request(slow_emulator):
    async def flow(fal):
        running = await fal.submit(TEXT_TO_IMAGE, {"prompt": "first"})
        next_up = await fal.submit(TEXT_TO_IMAGE, {"prompt": "second"})
        queued = await fal.submit(TEXT_TO_IMAGE, {"prompt": "third"})
        state = await fal.status(TEXT_TO_IMAGE, queued)
        assert (await fal.status(TEXT_TO_IMAGE, next_up)).queue_position == 0
        await fal.cancel(TEXT_TO_IMAGE, next_up)
        cancelled = await fal.cancel(TEXT_TO_IMAGE, queued)
        final = await fal.status(TEXT_TO_IMAGE, queued)
        with pytest.raises(FalApiError) as caught:
            await fal.result(TEXT_TO_IMAGE, queued)
        await fal.wait(TEXT_TO_IMAGE, running)
        again = await fal.cancel(TEXT_TO_IMAGE, running)
        return state, cancelled, final, caught.value, again

    state, cancelled, final, error, again = run(slow_emulator, flow)
    assert state.status == "IN_QUEUE" and state.queue_position == 1
    assert cancelled is True
    assert final.status == "COMPLETED" and final.error
    assert error.status_code == 400 and "cancelled" in error.message
    assert again is False, "a completed request answers ALREADY_COMPLETED"
    assert slow_emulator.emulator.stats()["requests_billed"] == 1


def test_a_crashed_generation_completes_with_an_error_and_is_not_billed(emulator, monkeypatch):
    def crash(*args):
        raise MemoryError

    monkeypatch.setattr("flux_pipeline.emulator.engine.render_image", crash)

    async def flow(fal):
        request_id = await fal.submit(TEXT_TO_IMAGE, {"prompt": "too much"})
        final = await fal.wait(TEXT_TO_IMAGE, request_id)
        with pytest.raises(FalApiError) as caught:
            await fal.result(TEXT_TO_IMAGE, request_id, failed=final.error is not None)
        return final, caught.value, fal.call_counts.calls["result"]

    final, error, result_calls = run(emulator, flow)
    assert final.status == "COMPLETED" and final.error_type == "internal_error"
    assert error.status_code == 500 and "MemoryError" in error.message
    assert error.request_failed and result_calls == 1, "the request's own error is final: not retried"
    assert emulator.emulator.stats()["requests_billed"] == 0


def test_upload_local_image_then_redux(emulator, tmp_path):
    from PIL import Image

    source = tmp_path / "source photo.png"
    Image.new("RGB", (300, 200), (10, 120, 200)).save(source)

    async def flow(fal):
        url = await fal.upload(source.read_bytes(), "image/png", source.name)
        return url, await fal.subscribe(REDUX, {"image_url": url, "seed": 5, "image_size": "square"})

    url, (_, output) = run(emulator, flow)
    assert url.startswith(emulator.url) and emulator.emulator.own_file(url).data == source.read_bytes()
    assert len(output.images) == 1 and output.seed == 5


def test_redux_with_unreadable_image_is_a_field_error(emulator):
    with pytest.raises(FalApiError) as caught:
        run(
            emulator,
            lambda fal: fal.subscribe(REDUX, {"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}),
        )
    assert caught.value.status_code == 422 and caught.value.field_errors[0][0] == "image_url"


def test_sync_endpoint(emulator):
    output = run(emulator, lambda fal: fal.run(TEXT_TO_IMAGE, {"prompt": "x", "sync_mode": True, "seed": 3}))
    assert output.seed == 3 and output.images[0].url.startswith("data:image/jpeg")
    assert emulator.emulator.stats()["requests_billed"] == 1


def test_polling_and_stream_give_the_same_logs():
    with EmulatorServer(EmulatorConfig(latency=0.3, queue_delay=0.1)) as server:
        results = {}
        for mode in ("poll", "stream"):
            lines = []
            run(
                server,
                lambda fal, lines=lines: fal.subscribe(
                    TEXT_TO_IMAGE, {"prompt": "x"}, on_log=lambda _, line: lines.append(line["message"])
                ),
                status_updates=mode,
                poll_interval=0.05,
            )
            results[mode] = lines
        assert results["poll"] == results["stream"] == [f"step {k}/28" for k in range(1, 29)]


def test_unknown_request_and_app(emulator):
    with pytest.raises(FalApiError) as caught:
        run(emulator, lambda fal: fal.status(TEXT_TO_IMAGE, "no-such-id"))
    assert caught.value.status_code == 404
    with httpx.Client(base_url=emulator.url, headers={"Authorization": "Key k"}) as http:
        assert http.post("/fal-ai/not-a-model", json={}).status_code == 404
        assert httpx.post(f"{emulator.url}/fal-ai/flux-pro/v1.1", json={"prompt": "x"}).status_code == 401


def test_key_never_in_logs_or_errors(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    with pytest.raises(FalApiError) as caught:
        run(emulator, lambda fal: fal.subscribe(REDUX, {"image_url": "data:image/png;base64,AAAA"}))
    errors.append(caught.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def unreachable():
        async with FalClient(SECRET_KEY, FalUrls.single_base(f"http://127.0.0.1:{closed_port}")) as fal:
            return await fal.submit(TEXT_TO_IMAGE, {"prompt": "x"})

    with pytest.raises(httpx.HTTPError) as caught_transport:
        asyncio.run(unreachable())
    errors.append(caught_transport.value)
    client = FalClient(SECRET_KEY, urls_for(emulator))
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(client), caplog.text]
    assert caplog.records, "httpx logged the requests"
    for text in texts:
        assert SECRET_KEY not in text


def test_the_environment_proxy_is_used_unless_no_proxy_names_the_host(emulator, monkeypatch):
    from .conftest import free_port

    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(httpx.ConnectError):
        run(emulator, lambda fal: fal.status(TEXT_TO_IMAGE, "no-such-id"), retry=RetryPolicy(max_attempts=1))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(FalApiError) as caught:
        run(emulator, lambda fal: fal.status(TEXT_TO_IMAGE, "no-such-id"))
    assert caught.value.status_code == 404, "the emulator answered, not the proxy"
