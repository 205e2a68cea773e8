"""fal's Platform APIs (pricing, billing events, usage, request history): FalPlatform and the
lost-request finder against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.client import FalClient
from flux_pipeline.fal.errors import AmbiguousLostRequest, FalApiError
from flux_pipeline.fal.lost_requests import find_lost_request, input_matches
from flux_pipeline.fal.models import REDUX, TEXT_TO_IMAGE, validate_input
from flux_pipeline.fal.platform import FalPlatform
from flux_pipeline.fal.retries import RetryPolicy

from .conftest import SECRET_KEY, free_port, urls_for

FAST_RETRY = dict(max_attempts=10, base_delay=0.01, max_delay=0.05)


def serve(**config) -> EmulatorServer:
    return EmulatorServer(EmulatorConfig(**{"latency": 0.05, "admin_keys": (SECRET_KEY,), **config}))


def run(server, flow, *, key: str = SECRET_KEY):
    async def main():
        async with (
            FalClient(SECRET_KEY, urls_for(server)) as fal,
            FalPlatform(key, base_url=server.url, retry=RetryPolicy(**FAST_RETRY)) as platform,
        ):
            return await flow(fal, platform)

    return asyncio.run(main())


def around_now() -> dict:
    now = datetime.now(UTC)
    return {"start": now - timedelta(minutes=5), "end": now + timedelta(minutes=5)}


async def generate(fal, inputs: list[dict]) -> list[str]:
    """Submit, wait and fetch each input's result concurrently: the request ids."""
    return [rid for rid, _ in await asyncio.gather(*(fal.subscribe(TEXT_TO_IMAGE, data) for data in inputs))]


def test_prices_and_estimates():
    async def flow(fal, platform):
        prices = await platform.prices([TEXT_TO_IMAGE, REDUX, "fal-ai/not-served"])
        listed = await platform.estimate({TEXT_TO_IMAGE: 120})
        await generate(fal, [{"prompt": "two megapixels", "image_size": {"width": 1536, "height": 1024}}])
        historical = await platform.estimate({TEXT_TO_IMAGE: 10}, "historical_api_price")
        return prices, listed, historical

    with serve() as server:
        prices, listed, historical = run(server, flow)
    assert set(prices) == {TEXT_TO_IMAGE, REDUX}
    price = prices[TEXT_TO_IMAGE]
    assert (price.endpoint_id, price.unit_price, price.unit, price.currency) == (
        TEXT_TO_IMAGE,
        0.04,
        "megapixels",
        "USD",
    )
    assert listed == pytest.approx(4.8)
    assert historical == pytest.approx(10 * 2 * 0.04)


def test_billing_events_and_usage_match_the_emulators_billing_after_a_discount():
    inputs = [
        {"prompt": "one megapixel", "image_size": "square_hd"},
        {"prompt": "rounded up to two", "image_size": {"width": 1536, "height": 1024}},
        {"prompt": "two images", "image_size": "landscape_4_3", "num_images": 2},
    ]

    async def flow(fal, platform):
        ids = await generate(fal, inputs)
        return ids, await platform.billing_events(ids, **around_now()), await platform.usage(timeframe="hour")

    with serve(percent_discount=10) as server:
        started = datetime.now(UTC)
        ids, events, usage = run(server, flow)
        billing = {b.request_id: b for b in server.emulator.billing}
    assert sorted(e.request_id for e in events) == sorted(ids) == sorted(billing)
    for event in events:
        billed = billing[event.request_id]
        assert event.endpoint_id == TEXT_TO_IMAGE
        assert event.output_units == billed.megapixels and event.unit_price == 0.04
        assert event.percent_discount == 10
        assert event.cost_estimate_nano_usd == round(billed.megapixels * 0.04 * 0.9 * 1e9)
        assert event.cost_usd == pytest.approx(billed.cost_usd * 0.9) and event.cost_usd < billed.cost_usd
        assert event.timestamp.tzinfo == UTC
        assert started <= event.timestamp <= datetime.now(UTC)
    assert sorted(billed.megapixels for billed in billing.values()) == [1, 2, 2]
    [result] = [result for bucket in usage for result in bucket.results]
    assert (result.endpoint_id, result.unit, result.quantity) == (TEXT_TO_IMAGE, "megapixels", 5)
    assert result.cost == pytest.approx(sum(e.cost_usd for e in events))


def test_more_than_50_ids_and_90_days_are_split_and_every_page_is_followed():
    async def flow(fal, platform):
        ids = await generate(fal, [{"prompt": f"row {n}", "seed": n} for n in range(60)])
        now = datetime.now(UTC)
        events = await platform.billing_events(
            ids, start=now - timedelta(days=100), end=now + timedelta(minutes=1), limit=20
        )
        history = platform.requests_by_endpoint(TEXT_TO_IMAGE, start=now - timedelta(minutes=5), limit=25)
        records = [record async for record in history]
        return ids, events, records, dict(platform.call_counts.calls)

    with serve() as server:
        ids, events, records, calls = run(server, flow)
        server_calls = server.emulator.calls["platform"]
    assert sorted(e.request_id for e in events) == sorted(ids)
    # 2 chunks (50 + 10 ids) x 2 windows (90 + 10 days): the old window is one empty page per
    # chunk, the recent one 3 pages of 20 for the first chunk and 1 page for the second
    assert calls["billing-events"] == 6
    assert sorted(r.request_id for r in records) == sorted(ids) and calls["by-endpoint"] == 3  # pages of 25
    assert server_calls == 6 + 3
    by_id = {r.request_id: r for r in records}
    sent = server.emulator.requests
    assert all(by_id[rid].json_input == sent[rid].payload and by_id[rid].status_code == 200 for rid in ids)


def test_billing_delay_hides_fresh_events_then_shows_them():
    async def flow(fal, platform):
        [rid] = await generate(fal, [{"prompt": "just finished"}])
        fresh = await platform.billing_events([rid], **around_now())
        await asyncio.sleep(1.2)
        return rid, fresh, await platform.billing_events([rid], **around_now())

    with serve(billing_delay=1.0) as server:
        rid, fresh, later = run(server, flow)
    assert fresh == []
    assert [e.request_id for e in later] == [rid]


def test_a_normal_key_gets_403_from_the_admin_apis_and_never_appears_in_errors():
    async def flow(fal, platform):
        prices = await platform.prices([TEXT_TO_IMAGE])
        errors = []
        for call in (platform.billing_events(["abc"], **around_now()), platform.usage()):
            with pytest.raises(FalApiError) as caught:
                await call
            errors.append(caught.value)
        return prices, errors, repr(platform)

    with serve(admin_keys=("another-admin-key",)) as server:
        prices, errors, platform_repr = run(server, flow)
        anonymous = httpx.get(f"{server.url}/v1/models/pricing", params={"endpoint_id": TEXT_TO_IMAGE})
    assert prices[TEXT_TO_IMAGE].unit_price == 0.04
    assert [e.status_code for e in errors] == [403, 403]
    assert anonymous.status_code == 401

    async def unreachable():
        async with FalPlatform(
            SECRET_KEY,
            base_url=f"http://127.0.0.1:{free_port()}",
            retry=RetryPolicy(max_attempts=2, base_delay=0.01),
        ) as platform:
            await platform.prices([TEXT_TO_IMAGE])

    with pytest.raises(httpx.TransportError) as transport:
        asyncio.run(unreachable())
    texts = [platform_repr, *(text for e in [*errors, transport.value] for text in (str(e), repr(e)))]
    assert all(SECRET_KEY not in text for text in texts)


def test_query_rules_of_the_emulated_apis():
    with serve() as server:

        def get(path, **params):
            return httpx.get(
                f"{server.url}/v1/models/{path}",
                params=params,
                headers={"Authorization": f"Key {SECRET_KEY}"},
            ).status_code

        assert get("pricing", endpoint_id=f"{TEXT_TO_IMAGE},{REDUX}") == 200
        listed = httpx.get(
            f"{server.url}/v1/models/pricing?endpoint_id={TEXT_TO_IMAGE},{REDUX}&limit=1",
            headers={"Authorization": f"Key {SECRET_KEY}"},
        ).json()
        assert len(listed["prices"]) == 1 and listed["has_more"] and listed["next_cursor"]
        assert get("pricing", endpoint_id=[TEXT_TO_IMAGE, REDUX]) == 200
        assert get("pricing") == 422
        assert get("pricing", endpoint_id=",".join(f"x/y{n}" for n in range(51))) == 422
        assert get("billing-events", start="2025-01-01", end="2025-03-01T00:00:00Z") == 200
        assert get("billing-events", start="2025-01-01", end="2025-06-01") == 422  # over 90 days
        assert get("billing-events", start="yesterday") == 422
        assert get("billing-events", start="2025-02-01", end="2025-01-01") == 422
        assert get("billing-events", limit=10_001) == 422
        assert get("billing-events", cursor="not-a-cursor") == 422
        assert get("requests/by-endpoint", endpoint_id=TEXT_TO_IMAGE, limit=101) == 422
        assert get("requests/by-endpoint", endpoint_id=TEXT_TO_IMAGE, status="fine") == 422
        assert get("usage", timeframe="decade") == 422
        assert get("usage", timezone="Europe/Berlin", expand="summary") == 200


def test_429_5xx_and_dropped_connections_from_the_platform_apis_are_retried():
    faults = FaultConfig(
        rate_limit=0.25, server_error=0.25, connection_reset=0.15, seed=5, retry_after_seconds=0.01
    )

    async def flow(fal, platform):
        prices = [await platform.prices([TEXT_TO_IMAGE]) for _ in range(15)]
        return prices, dict(platform.call_counts.retries)

    with serve(faults=faults) as server:
        prices, retries = run(server, flow)
        injected = server.emulator.stats()["faults_injected"]
    assert all(p[TEXT_TO_IMAGE].unit_price == 0.04 for p in prices)
    assert {"rate_limit", "server_error", "connection_reset"} <= set(injected)
    assert retries["pricing"] == sum(injected.values())


def test_requests_still_running_are_listed_with_their_input_and_without_times():
    data = {"prompt": "slow one", "seed": 3}

    async def flow(fal, platform):
        since = datetime.now(UTC) - timedelta(seconds=5)
        rid = await fal.submit(TEXT_TO_IMAGE, data)
        running = [r async for r in platform.requests_by_endpoint(TEXT_TO_IMAGE, start=since)]
        await fal.wait(TEXT_TO_IMAGE, rid)
        done = [r async for r in platform.requests_by_endpoint(TEXT_TO_IMAGE, start=since)]
        bare = [r async for r in platform.requests_by_endpoint(TEXT_TO_IMAGE, start=since, payloads=False)]
        return rid, running, done, bare

    with serve(latency=0.8) as server:
        rid, [running], [done], [bare] = run(server, flow)
    assert running.request_id == rid and running.json_input == validate_input(TEXT_TO_IMAGE, data).wire()
    assert (running.started_at, running.ended_at, running.status_code, running.duration) == (None,) * 4
    assert done.status_code == 200 and done.sent_at <= done.started_at < done.ended_at
    assert done.duration == pytest.approx(0.8, abs=0.2) and len(done.json_output["images"]) == 1
    assert bare.json_input is None and bare.json_output is None


def test_lost_request_finder_exactly_one_ambiguous_and_none():
    ours = validate_input(TEXT_TO_IMAGE, {"prompt": "find me", "seed": 1}).wire()
    twice = validate_input(TEXT_TO_IMAGE, {"prompt": "sent twice", "seed": 2}).wire()
    never = validate_input(TEXT_TO_IMAGE, {"prompt": "never sent", "seed": 3}).wire()

    async def flow(fal, platform):
        def find(sent, submitted_at):
            return find_lost_request(
                platform, TEXT_TO_IMAGE, sent, submitted_at, settle=1.0, poll_interval=0.1
            )

        submitted_at = datetime.now(UTC)
        finder = asyncio.create_task(find(ours, submitted_at))  # polls until the submit shows up
        await asyncio.sleep(0.3)
        rid = await fal.submit(TEXT_TO_IMAGE, ours)
        other = await fal.submit(TEXT_TO_IMAGE, {"prompt": "find me", "seed": 99})
        found = await finder
        await asyncio.gather(fal.submit(TEXT_TO_IMAGE, twice), fal.submit(TEXT_TO_IMAGE, twice))
        with pytest.raises(AmbiguousLostRequest, match="2 requests"):
            await find(twice, submitted_at)
        clock = time.monotonic()
        missing = await find(never, datetime.now(UTC))
        return rid, other, found, missing, time.monotonic() - clock

    with serve(latency=0.5) as server:
        rid, other, found, missing, waited = run(server, flow)
    assert found == rid != other
    assert missing is None and waited >= 1.0


def test_input_matching_ignores_fields_fal_fills_in_and_compares_json_values():
    sent = {"prompt": "x", "image_size": {"width": 640, "height": 480}, "seed": 1}
    assert input_matches({**sent, "num_images": 1, "sync_mode": False}, sent)
    assert input_matches({**sent, "image_size": {"height": 480, "width": 640}}, sent)
    assert input_matches({"prompt": "x", "tags": [1, 2]}, {"prompt": "x", "tags": (1, 2)})
    assert not input_matches({"prompt": "x", "seed": 1}, sent)
    assert not input_matches({**sent, "seed": 2}, sent)
    assert not input_matches(None, sent)


def test_a_lost_image_is_billed_but_its_download_is_gone():
    assert "lost_image" not in FaultConfig.spread(0.2).injected_kinds()
    assert FaultConfig(lost_image=0.5).injected_kinds() == ["lost_image"]

    async def flow(fal, platform):
        rid, output = await fal.subscribe(TEXT_TO_IMAGE, {"prompt": "gone"})
        with pytest.raises(FalApiError) as caught:
            await fal.download(output.images[0].url)
        return rid, caught.value, await platform.billing_events([rid], **around_now())

    with serve(faults=FaultConfig(lost_image=1.0)) as server:
        rid, error, events = run(server, flow)
        stats = server.emulator.stats()
    assert error.status_code == 404
    assert [e.request_id for e in events] == [rid] and stats["requests_billed"] == 1
    assert stats["faults_injected"] == {"lost_image": 1}
