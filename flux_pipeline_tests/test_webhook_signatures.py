"""fal's webhook signatures, verified over real HTTP: the emulator signs its deliveries with its
own Ed25519 key and serves its JWKS; the receiver takes only fresh deliveries that verify, once,
within its body limit, and the ledger only those whose request is their own submit attempt's."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time

import httpx
import pytest

from flux_pipeline.dataset.money.ledger import RequestKey, RequestLedger, RunContext, RunLedger
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.endpoints import JWKS_PATH
from flux_pipeline.fal.models import TEXT_TO_IMAGE
from flux_pipeline.fal.webhook_signatures import WebhookSigner, WebhookVerifier
from flux_pipeline.fal.webhooks import MAX_BODY_BYTES, WebhookReceiver

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


def test_a_replay_re_encoded_or_posted_to_another_token_is_refused(delivery):
    """The signature's bytes name the delivery: upper case, spaced or mixed hex of the same bytes is
    not a new one, nor is the same delivery posted to another submit attempt's token."""
    server, receiver, received = delivery
    signed = server.emulator.webhook_signer.headers("rid-1", BODY)
    assert post(receiver, signed).status_code == 200
    hex_ = signed["x-fal-webhook-signature"]
    spellings = {
        "upper case": hex_.upper(),
        "spaced": " ".join(hex_[i : i + 2] for i in range(0, len(hex_), 2)),
        "mixed": "".join(c.upper() if i % 2 else c for i, c in enumerate(hex_)),
    }
    for name, spelling in spellings.items():
        answer = post(receiver, {**signed, "x-fal-webhook-signature": spelling})
        assert answer.status_code == 401 and "mis-signed" in answer.json()["detail"], name
    other_token = httpx.post(f"{receiver.base_url}/tok-2", content=BODY, headers=signed)
    assert other_token.status_code == 401 and "replayed" in other_token.json()["detail"]
    assert received == [("tok-1", json.loads(BODY))], "only the genuine delivery, once"


def test_a_body_that_names_another_request_than_its_signature_is_refused(delivery):
    server, receiver, received = delivery
    other = json.dumps({"request_id": "rid-2", "status": "OK"}).encode()
    answer = post(receiver, server.emulator.webhook_signer.headers("rid-1", other), other)
    assert answer.status_code == 400 and "signature names" in answer.json()["detail"]
    assert received == []


@pytest.fixture
def ledger_delivery(tmp_path):
    """(deliver, ledger, the row's token): the receiver writes into a real ledger whose row `p-1`
    was submitted as request rid-1; `deliver(token, request_id)` posts a genuine delivery, signed
    anew each time (a second earlier than the last: Ed25519 signs one message alike)."""
    with EmulatorServer() as server, RequestLedger(tmp_path / "ledger.sqlite") as ledger:
        run_ledger = RunLedger(ledger, "part", RunContext("run-1", "emulator"))
        key = RequestKey("part", "p-1", TEXT_TO_IMAGE)
        token = ledger.submitting(key, "fp")
        ledger.submitted(key, "rid-1")
        verifier = WebhookVerifier(f"{server.url}{JWKS_PATH}")
        stamps = itertools.count(int(time.time()), -1)

        def deliver(token: str, request_id: str) -> httpx.Response:
            body = json.dumps({"request_id": request_id, "status": "OK"}).encode()
            headers = server.emulator.webhook_signer.headers(request_id, body, timestamp=next(stamps))
            return httpx.post(f"{receiver.base_url}/{token}", content=body, headers=headers)

        with WebhookReceiver(run_ledger.webhook_received, verifier, host="127.0.0.1", port=0) as receiver:
            yield deliver, ledger, token


def test_a_genuine_delivery_never_attaches_a_request_to_a_second_row(ledger_delivery, caplog):
    caplog.set_level(logging.WARNING)
    deliver, ledger, token = ledger_delivery
    foreign = deliver(token, "rid-9")
    assert foreign.status_code == 409, "the token's row holds rid-1"
    assert ledger.webhook_request_id(token) is None
    stolen = deliver("another-attempt", "rid-1")
    assert stolen.status_code == 409, "rid-1 is the row p-1's request"
    assert ledger.webhook_request_id("another-attempt") is None
    assert deliver(token, "rid-1").status_code == 200
    assert ledger.webhook_request_id(token) == "rid-1"
    assert deliver(token, "rid-1").status_code == 200, "fal's own retry, signed anew"
    lost = deliver("lost-attempt", "rid-5")  # a submit whose response was lost
    assert lost.status_code == 200 and ledger.webhook_request_id("lost-attempt") == "rid-5"
    again = deliver("yet-another", "rid-5")
    assert again.status_code == 409 and ledger.webhook_request_id("yet-another") is None
    assert caplog.text.count("another submit attempt's") == 3


def raw_post(receiver: WebhookReceiver, head: str, body_parts: list[bytes]) -> bytes:
    """Sends the request line and headers, then `body_parts`, and reads the answer without sending
    anything more (a server that waited for the rest would time out)."""
    with socket.create_connection((receiver.host, receiver.port), timeout=10) as connection:
        connection.sendall(f"POST /fal-webhook/tok-1 HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        for part in body_parts:
            connection.sendall(part)
        return connection.recv(65536)


def test_a_body_over_the_limit_is_answered_413_before_the_rest_is_read(delivery):
    server, receiver, received = delivery
    declared = raw_post(receiver, f"Content-Length: {64 * 1024 * 1024}\r\n", [b"{" * 1024])
    assert declared.startswith(b"HTTP/1.1 413"), declared[:80]
    chunk = b"x" * 65536
    chunked = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY_BYTES // len(chunk) + 1)
    streamed = raw_post(receiver, "Transfer-Encoding: chunked\r\n", chunked)
    assert streamed.startswith(b"HTTP/1.1 413"), streamed[:80]
    within = server.emulator.webhook_signer.headers("rid-1", BODY)
    assert post(receiver, within).status_code == 200 and len(received) == 1, "a delivery within it is taken"
