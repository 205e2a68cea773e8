"""FalResource: concurrency, isolation of failures, cancellation, key hygiene, the embedded default."""

from __future__ import annotations

import time

import dagster as dg

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import REDUX, TEXT_TO_IMAGE, ReduxInput, TextToImageInput
from flux_pipeline.fal.types import Generation, GenerationFailure, GenerationRequest
from flux_pipeline.resources import EmulatedFalResource, FalResource

from .conftest import SECRET_KEY, decode, resource_for


def t2i_requests(count: int, **fields) -> list[GenerationRequest]:
    return [
        GenerationRequest(f"row-{i}", TEXT_TO_IMAGE, TextToImageInput(prompt=f"prompt {i}", seed=i, **fields))
        for i in range(count)
    ]


def test_runs_concurrently_up_to_the_limit():
    with EmulatorServer(EmulatorConfig(latency=0.2)) as server:
        fal = resource_for(server, max_concurrency=5)
        outcomes = list(fal.generate(t2i_requests(20, image_size="square")))
        stats = server.emulator.stats()
    assert sorted(o.request.prompt_id for o in outcomes) == sorted(f"row-{i}" for i in range(20))
    assert all(isinstance(o, Generation) for o in outcomes)
    assert stats["peak_in_flight"] == 5, "exactly the limit in flight, never more"
    assert stats["requests_billed"] == 20
    for outcome in outcomes:
        assert outcome.output.seed == int(outcome.request.prompt_id.split("-")[1])
        assert decode(outcome.files[0].data).size == (512, 512)


def test_one_failed_request_does_not_lose_the_others(emulator):
    planned = t2i_requests(4)
    planned.insert(2, GenerationRequest("bad", REDUX, ReduxInput(image_url="data:image/png;base64,AAAA")))
    outcomes = {o.request.prompt_id: o for o in resource_for(emulator).generate(planned)}
    assert isinstance(outcomes["bad"], GenerationFailure)
    assert outcomes["bad"].status_code == 422 and outcomes["bad"].field_errors[0][0] == "image_url"
    assert outcomes["bad"].request_id in emulator.emulator.requests
    assert all(isinstance(outcomes[f"row-{i}"], Generation) for i in range(4))


def test_stopping_early_cancels_queued_requests():
    with EmulatorServer(EmulatorConfig(latency=0.3, runners=1)) as server:
        fal = resource_for(server, max_concurrency=4)
        stream = fal.generate(t2i_requests(10))
        first = next(stream)
        stream.close()
        deadline = time.monotonic() + 5
        while server.emulator.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)  # a request cancelled while running still finishes (and is billed)
        stats = server.emulator.stats()
        cancelled = [r for r in server.emulator.requests.values() if r.cancelled]
    assert isinstance(first, Generation)
    # 1 finished + 4 refilled slots at most; of those, the queued ones were cancelled, not billed
    assert stats["requests_submitted"] <= 5
    assert len(cancelled) >= 2
    assert stats["requests_billed"] == stats["requests_submitted"] - len(cancelled)


def test_upload_file(emulator, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64), "red").save(path)
    url = resource_for(emulator).upload_file(path)
    stored = emulator.emulator.own_file(url)
    assert stored.data == path.read_bytes() and stored.content_type == "image/jpeg"


def test_key_is_redacted_from_repr_and_config_display():
    fal = FalResource(key=SECRET_KEY)
    assert SECRET_KEY not in repr(fal) and SECRET_KEY not in str(fal)
    assert SECRET_KEY not in repr(fal.client())


def test_without_a_key_the_embedded_emulator_is_used_and_says_so():
    @dg.asset
    def one_image(fal: FalResource) -> int:
        outcomes = list(fal.generate(t2i_requests(2, image_size="square")))
        return sum(isinstance(o, Generation) for o in outcomes)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [one_image], resources={"fal": EmulatedFalResource(latency=0.01)}, instance=instance
        )
        messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert result.output_for_node("one_image") == 2
    assert any("FAL_KEY is not set" in m and "embedded fal emulator" in m for m in messages)


def test_a_slow_download_does_not_hold_a_fal_slot():
    """A request frees its slot at fal once its result is fetched: while its file downloads, the
    next requests run. Drawn but unread requests stay bounded (twice the limit)."""
    faults = FaultConfig(slow_download=1.0, slow_download_seconds=1.5)
    with EmulatorServer(EmulatorConfig(latency=0.1, faults=faults)) as server:
        stream = resource_for(server, max_concurrency=2).generate(t2i_requests(8, image_size="square"))
        first = next(stream)
        submitted_before_the_first_download_ended = server.emulator.stats()["requests_submitted"]
        rest = list(stream)
        stats = server.emulator.stats()
    assert all(isinstance(o, Generation) for o in [first, *rest]) and len(rest) == 7
    assert submitted_before_the_first_download_ended == 4, "2 requests at fal, 2 downloading"
    assert stats["peak_in_flight"] == 2, "never more than the limit at fal"
    assert stats["requests_billed"] == 8
