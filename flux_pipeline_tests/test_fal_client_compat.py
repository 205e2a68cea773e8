"""fal's own Python client, pointed at the emulator through its documented host settings."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import trustme

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import DEV, SCHNELL, ULTRA

from .conftest import SECRET_KEY

CLIENT_SCRIPT = """
import json, fal_client
updates = []
result = fal_client.subscribe(
    "fal-ai/flux-pro/v1.1",
    arguments={"prompt": "a dog on a skateboard", "seed": 3, "num_images": 2},
    with_logs=True,
    on_queue_update=lambda update: updates.append({
        "kind": type(update).__name__, "logs": [e["message"] for e in getattr(update, "logs", None) or []]}),
)
handle = fal_client.submit("fal-ai/flux-pro/v1.1/redux", arguments={"image_url": result["images"][0]["url"]})
redux = handle.get()
print(json.dumps({"updates": updates, "result": result, "redux_seed": redux["seed"],
                  "redux_images": len(redux["images"])}))
"""


@contextlib.contextmanager
def tls_emulator(tmp_path, config: EmulatorConfig):
    """An emulator over TLS (fal's client speaks https only) and the environment that points
    fal's client at it through its documented host settings."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, ca_path = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))
    with EmulatorServer(config, ssl_certfile=str(cert_path)) as server:
        yield (
            server,
            dict(
                os.environ,
                FAL_KEY=SECRET_KEY,
                FAL_RUN_HOST=f"127.0.0.1:{server.port}/run",
                FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
                SSL_CERT_FILE=str(ca_path),
                NO_PROXY="127.0.0.1,localhost",
            ),
        )


def run_client(script: str, env: dict, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert SECRET_KEY not in done.stderr
    return json.loads(done.stdout)


def test_fal_client_subscribe_with_logs_against_the_emulator(tmp_path):
    with tls_emulator(tmp_path, EmulatorConfig(latency=0.4, queue_delay=0.25)) as (server, env):
        report = run_client(CLIENT_SCRIPT, env)

    kinds = [u["kind"] for u in report["updates"]]
    assert kinds[0] == "Queued" and "InProgress" in kinds and kinds[-1] == "Completed"
    assert kinds.index("InProgress") > kinds.index("Queued")
    logs = report["updates"][-1]["logs"]
    assert logs == [f"step {k}/28" for k in range(1, 29)], "Completed carries the cumulative logs"
    result = report["result"]
    assert (
        result["seed"] == 3 and len(result["images"]) == 2 and result["has_nsfw_concepts"] == [False, False]
    )
    assert all(
        image["url"].startswith(f"https://127.0.0.1:{server.port}/files/") for image in result["images"]
    )
    assert report["redux_images"] == 1 and isinstance(report["redux_seed"], int)


MODELS_SCRIPT = """
import json, sys, fal_client
out = {}
for endpoint, arguments in json.loads(sys.argv[1]).items():
    result = fal_client.submit(endpoint, arguments=arguments).get()
    out[endpoint] = [result["seed"], result["images"][0]["width"], result["images"][0]["height"]]
    out["last_url"] = result["images"][0]["url"]
redux = fal_client.subscribe("fal-ai/flux-pro/v1.1-ultra/redux", arguments={"image_url": out["last_url"]})
out["ultra_redux"] = [redux["images"][0]["width"], redux["images"][0]["height"]]
try:
    fal_client.subscribe("fal-ai/flux/schnell", arguments={"prompt": "x", "num_inference_steps": 40})
except Exception as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_fal_client_calls_every_flux_model_on_the_emulator(tmp_path):
    calls = {
        SCHNELL: {"prompt": "a fox", "seed": 1, "num_inference_steps": 2, "image_size": "square"},
        DEV: {"prompt": "a fox", "seed": 2, "guidance_scale": 5, "image_size": "square_hd"},
        ULTRA: {"prompt": "a fox", "seed": 3, "aspect_ratio": "9:16", "raw": True},
    }
    with tls_emulator(tmp_path, EmulatorConfig(latency=0.05)) as (server, env):
        report = run_client(MODELS_SCRIPT, env, json.dumps(calls))
        billed = [(b.endpoint, b.unit, b.cost_usd) for b in server.emulator.billing]
    assert report[SCHNELL] == [1, 512, 512] and report[DEV] == [2, 1024, 1024]
    assert report[ULTRA] == [3, 1536, 2752] and report["ultra_redux"] == [2752, 1536]
    assert "num_inference_steps" in report["error"], "the 422 names the field"
    assert billed == [
        (SCHNELL, "megapixels", 0.003),
        (DEV, "megapixels", 0.025),
        (ULTRA, "image", 0.06),
        ("fal-ai/flux-pro/v1.1-ultra/redux", "image", 0.06),
    ]
