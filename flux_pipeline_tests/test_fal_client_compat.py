"""fal's own Python client, pointed at the emulator through its documented host settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import trustme

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer

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


def test_fal_client_subscribe_with_logs_against_the_emulator(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, ca_path = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))

    with EmulatorServer(EmulatorConfig(latency=0.4, queue_delay=0.25), ssl_certfile=str(cert_path)) as server:
        env = dict(
            os.environ,
            FAL_KEY=SECRET_KEY,
            FAL_RUN_HOST=f"127.0.0.1:{server.port}/run",
            FAL_QUEUE_RUN_HOST=f"127.0.0.1:{server.port}",
            SSL_CERT_FILE=str(ca_path),
            NO_PROXY="127.0.0.1,localhost",
        )
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)

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
    assert SECRET_KEY not in done.stderr
