"""fal's webhook signatures, verified over real HTTP: the emulator signs its deliveries with its
own Ed25519 key and serves its JWKS; the receiver takes only fresh deliveries that verify."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest

from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.endpoints import JWKS_PATH
from flux_pipeline.fal.webhook_signatures import WebhookSigner, WebhookVerifier
from flux_pipeline.fal.webhooks import WebhookReceiver

BODY = json.dumps({"request_id": "rid-1", "status": "OK", "payload": {"images": []}}).encode()


@pytest.fixture
def delivery():
    """(emulator server, receiver, what reached the sink): the receiver verifies against the
    emulator's JWKS."""
    received: list[tuple[str, dict]] = []
    with EmulatorServer() as server:
        verifier = WebhookVerifier(f"{server.url}{JWKS_PATH}", refresh_interval=0.5)
        receiver = WebhookReceiver(
            lambda token, body: received.append((token, body)), verifier, host="127.0.0.1", port=0
        )
        with receiver:
            yield server, receiver, received


def post(receiver: WebhookReceiver, headers: dict, body: bytes = BODY) -> httpx.Response:
    return httpx.post(f"{receiver.base_url}/tok-1", content=body, headers=headers)


def test_a_signed_delivery_is_taken_once_and_a_replay_is_refused(delivery, caplog):
    server, receiver, received = delivery
    signed = server.emulator.webhook_signer.headers("rid-1", BODY)
    assert post(receiver, signed).status_code == 200
    assert received == [("tok-1", json.loads(BODY))]
    replay = post(receiver, signed)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    assert len(received) == 1 and server.emulator.jwks_served == 1, "the JWKS is fetched once and cached"
    assert "rejected a webhook delivery" in caplog.text and "replayed" in caplog.text


def test_unsigned_mis_signed_tampered_and_stale_deliveries_change_nothing(delivery, caplog):
    caplog.set_level(logging.WARNING)
    server, receiver, received = delivery
    signer = server.emulator.webhook_signer
    forger = WebhookSigner(signer.user_id)  # a key fal never published
    stale_at = int(time.time()) - 301
    cases = {
        "unsigned": ({}, BODY),
        "mis-signed": (forger.headers("rid-1", BODY), BODY),
        "tampered": (signer.headers("rid-1", BODY), BODY.replace(b"OK", b"ERROR")),
        "other request": ({**signer.headers("rid-1", BODY), "x-fal-webhook-request-id": "rid-2"}, BODY),
        "stale": (signer.headers("rid-1", BODY, timestamp=stale_at), BODY),
        "from the future": (signer.headers("rid-1", BODY, timestamp=int(time.time()) + 360), BODY),
        "bad hex": ({**signer.headers("rid-1", BODY), "x-fal-webhook-signature": "zz"}, BODY),
    }
    reasons = {}
    for name, (headers, body) in cases.items():
        answer = post(receiver, headers, body)
        assert answer.status_code == 401, name
        reasons[name] = answer.json()["detail"]
    assert received == []
    assert (
        "unsigned" in reasons["unsigned"]
        and "stale" in reasons["stale"]
        and "stale" in reasons["from the future"]
    )
    assert all(
        "mis-signed" in reasons[name] for name in ("mis-signed", "tampered", "other request", "bad hex")
    )
    assert caplog.text.count("rejected a webhook delivery") == len(cases)


def test_a_rotated_key_is_fetched_again_but_a_forger_cannot_make_the_receiver_refetch_at_will(delivery):
    server, receiver, received = delivery
    signer = server.emulator.webhook_signer
    assert post(receiver, signer.headers("rid-1", BODY)).status_code == 200
    signer.rotate()
    time.sleep(0.6)  # past the refresh interval
    assert post(receiver, signer.headers("rid-1", BODY)).status_code == 200, "the new key verifies"
    assert server.emulator.jwks_served == 2
    forger = WebhookSigner(signer.user_id)
    for _ in range(5):
        assert post(receiver, forger.headers("rid-1", BODY)).status_code == 401
    assert server.emulator.jwks_served <= 3, "unknown signatures refetch at most once per interval"
    assert len(received) == 2


def test_deliveries_arriving_together_before_the_keys_are_fetched_all_verify_on_one_fetch(delivery):
    """fal delivers the webhooks of a batch's first requests at once: those that arrive while the
    first one fetches the JWKS wait for that fetch instead of being refused as mis-signed."""
    server, receiver, received = delivery
    bodies = [
        json.dumps({"request_id": f"rid-{n}", "status": "OK", "payload": {}}).encode() for n in range(12)
    ]

    async def deliver_all() -> list[int]:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{receiver.base_url}/tok-{n}",
                        content=body,
                        headers=server.emulator.webhook_signer.headers(f"rid-{n}", body),
                    )
                    for n, body in enumerate(bodies)
                )
            )
        return [response.status_code for response in responses]

    assert asyncio.run(deliver_all()) == [200] * len(bodies)
    assert sorted(token for token, _ in received) == sorted(f"tok-{n}" for n in range(12))
    assert server.emulator.jwks_served == 1
