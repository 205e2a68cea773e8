"""Throughput against the emulator (run by hand, not in CI):

    .venv/bin/python benchmarks/throughput.py --n 200 --concurrency 8 --latency 0.5

(a) a sequential loop with fal's own Python client (subscribe + download), on `--sequential-n`
images; (b) flux_pipeline's FalResource on `--n` images with `--concurrency` in flight. Prints
images/s, the ratio to the physical limit C/L, HTTP calls per image (counted by the emulator,
which runs in its own process) and this process's peak RSS."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

import httpx

from flux_pipeline.fal.batch import Generation, GenerationJob
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.fal.models import TEXT_TO_IMAGE, TextToImageInput
from flux_pipeline.resources import FalResource

KEY = "benchmark-key"


def start_emulator(latency: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flux_pipeline.cli",
            "emulator",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/_emulator/stats")
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("emulator did not start")


def stats(url: str) -> dict:
    return httpx.get(f"{url}/_emulator/stats").json()


def calls_since(before: dict, after: dict) -> dict[str, int]:
    return {k: after["http_calls"].get(k, 0) - before["http_calls"].get(k, 0) for k in after["http_calls"]}


def sequential_fal_client(url: str, n: int) -> float:
    os.environ["FAL_KEY"] = KEY
    import fal_client

    # the documented override for a plain-http server (protocol.md 1.1)
    fal_client.client.QUEUE_URL_FORMAT = f"{url}/"
    fal_client.client.RUN_URL_FORMAT = f"{url}/run/"
    started = time.perf_counter()
    for i in range(n):
        result = fal_client.subscribe(
            TEXT_TO_IMAGE, arguments={"prompt": f"sequential {i}", "seed": i, "image_size": "square"}
        )
        httpx.get(result["images"][0]["url"]).raise_for_status()
    return time.perf_counter() - started


def pipelined(url: str, n: int, concurrency: int) -> tuple[float, int]:
    urls = FalUrls.single_base(url)
    fal = FalResource(
        key=KEY, queue_url=urls.queue, run_url=urls.run, storage_url=urls.storage, max_concurrency=concurrency
    )
    jobs = (
        GenerationJob(
            str(i), TEXT_TO_IMAGE, TextToImageInput(prompt=f"pipelined {i}", seed=i, image_size="square")
        )
        for i in range(n)
    )
    started = time.perf_counter()
    ok = sum(isinstance(o, Generation) for o in fal.generate(jobs))
    return time.perf_counter() - started, ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--sequential-n", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    process, url = start_emulator(args.latency)
    try:
        before = stats(url)
        seconds = sequential_fal_client(url, args.sequential_n)
        middle = stats(url)
        seq_rate = args.sequential_n / seconds
        seq_calls = calls_since(before, middle)
        seconds, ok = pipelined(url, args.n, args.concurrency)
        after = stats(url)
        rate = ok / seconds
        calls = calls_since(middle, after)
    finally:
        process.terminate()
    limit = args.concurrency / args.latency
    report = {
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "physical_limit_images_per_s": round(limit, 2),
        "sequential_fal_client": {
            "images": args.sequential_n,
            "images_per_s": round(seq_rate, 3),
            "status_calls_per_image": round(seq_calls.get("status", 0) / args.sequential_n, 2),
        },
        "flux_pipeline": {
            "images": ok,
            "seconds": round(seconds, 2),
            "images_per_s": round(rate, 2),
            "ratio_to_limit": round(rate / limit, 3),
            "speedup_vs_sequential": round(rate / seq_rate, 1),
            "http_calls_per_image": {k: round(v / args.n, 2) for k, v in sorted(calls.items())},
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
