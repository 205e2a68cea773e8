"""Throughput of FalResource against its fair peer, fal's own async client (run by hand, not in CI):

    .venv/bin/python -m benchmarks.throughput --n 400 --concurrency 8 64 --latency 1 --repeats 3

The emulator runs in its own process (`flux-pipeline emulator`). Each measurement runs one client in
a fresh process, on the same N inputs:
- `resource`: `FalResource.generate`, as the pipeline calls it (the bridge, the batch runner, every
  download verified);
- `peer`: `fal_client.AsyncClient.subscribe` plus a download with httpx, under
  `asyncio.Semaphore(C)`.

Before the measurements a warm-up run (not reported) fills the emulator's cache of rendered images,
so that rendering, which the real fal does on its GPUs, is not charged to the clients' host.

For each client it reports images/s, the ratio to the limit C/L and to the ceiling of whole waves
(fal runs at most C requests at once, each for L seconds, so N requests take at least ceil(N/C)·L
seconds: for N=400 and C=64 that is 7 s, 57.1 images/s, 0.89 of C/L), status calls per image (counted by
the emulator), the client process's CPU milliseconds per image, and the emulator's CPU as a share of
one core (read from /proc/<pid>/stat), with a verdict on whether the emulator was the bottleneck.
Every figure is the median over the repeats; the machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from flux_pipeline.emulator.images import RENDERED_CACHE_SIZE
from flux_pipeline.fal.models import PRESET_SIZES, TEXT_TO_IMAGE

from .peer_script import point_fal_client_at

KEY = "benchmark-key"
CLIENTS = ("resource", "peer")
CLIENT_MODULES = {"resource": ("flux_pipeline.resources",), "peer": ("fal_client",)}
EMULATOR_BOTTLENECK_SHARE = 0.8
"""The emulator serves from one event loop: past this share of one core it may be what limits."""
REPO = Path(__file__).resolve().parent.parent


# -- the emulator, in its own process -----------------------------------------------------------------


@dataclass
class EmulatorProcess:
    process: subprocess.Popen
    url: str
    env: dict[str, str]
    """What a client process needs to trust the emulator's certificate (empty without TLS)."""

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_emulator/stats", verify=self.env.get("SSL_CERT_FILE", True)).json()

    def cpu_seconds(self) -> float:
        """User plus system CPU of the emulator process (all its threads), from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tls_files(folder: Path) -> tuple[Path, Path]:
    """(server certificate with key, CA bundle) for 127.0.0.1, made with trustme."""
    import trustme

    ca = trustme.CA()
    server, bundle = folder / "server.pem", folder / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server))
    ca.cert_pem.write_to_path(str(bundle))
    return server, bundle


def start_emulator(latency: float, tls_folder: Path | None, *options: str) -> EmulatorProcess:
    """`flux-pipeline emulator` in a process of its own, with more command-line `options`."""
    port = free_port()
    command = [sys.executable, "-m", "flux_pipeline.cli", "emulator", "--port", str(port)]
    command += ["--latency", str(latency), "--log-level", "warning", *options]
    env: dict[str, str] = {}
    if tls_folder is not None:
        certificate, bundle = tls_files(tls_folder)
        command += ["--ssl-certfile", str(certificate)]
        env = {"SSL_CERT_FILE": str(bundle)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=REPO)
    emulator = EmulatorProcess(process, f"{'https' if env else 'http'}://127.0.0.1:{port}", env)
    for _ in range(400):
        try:
            emulator.stats()
            return emulator
        except httpx.HTTPError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("the emulator did not start")


# -- the clients, each in a process of its own ------------------------------------------------------


def inputs(n: int, image_size: str) -> list[dict]:
    """The same N requests for every client (so the emulator's image cache serves them all)."""
    return [{"prompt": f"benchmark image {i}", "seed": i, "image_size": image_size} for i in range(n)]


def run_resource(url: str, requests: list[dict], concurrency: int) -> int:
    from flux_pipeline.fal.endpoints import FalUrls
    from flux_pipeline.fal.models import TextToImageInput
    from flux_pipeline.fal.types import Generation, GenerationRequest
    from flux_pipeline.resources import FalResource

    urls = FalUrls.single_base(url)
    fal = FalResource(
        key=KEY, queue_url=urls.queue, run_url=urls.run, storage_url=urls.storage, max_concurrency=concurrency
    )
    planned = (
        GenerationRequest(str(i), TEXT_TO_IMAGE, TextToImageInput(**r)) for i, r in enumerate(requests)
    )
    return sum(isinstance(outcome, Generation) for outcome in fal.generate(planned))


def run_peer(url: str, requests: list[dict], concurrency: int) -> int:
    import fal_client

    point_fal_client_at(url)

    async def main() -> int:
        fal = fal_client.AsyncClient(key=KEY)
        slots = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=120) as downloads:

            async def one(arguments: dict) -> bool:
                async with slots:
                    result = await fal.subscribe(TEXT_TO_IMAGE, arguments)
                    response = await downloads.get(result["images"][0]["url"])
                    return response.is_success and len(response.content) > 0

            done = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        return sum(outcome is True for outcome in done)

    return asyncio.run(main())


def worker(args: argparse.Namespace) -> None:
    """One client's run: imports first, then `ready`; it starts on a line on stdin and prints its
    wall seconds and CPU seconds (every thread of this process) for the run alone."""
    run = {"resource": run_resource, "peer": run_peer}[args.worker]
    for module in CLIENT_MODULES[args.worker]:  # the clock times the run, not Python's imports
        importlib.import_module(module)
    requests = inputs(args.n, args.image_size)
    print("ready", flush=True)
    sys.stdin.readline()
    wall, cpu = time.perf_counter(), time.process_time()
    images = run(args.url, requests, args.concurrency[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"images": images, "seconds": wall, "cpu_seconds": cpu}), flush=True)


# -- one measurement ---------------------------------------------------------------------------------


def measure(emulator: EmulatorProcess, client: str, args: argparse.Namespace, concurrency: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.throughput", "--worker", client, "--url", emulator.url]
    command += ["--n", str(args.n), "--concurrency", str(concurrency), "--image-size", args.image_size]
    env = {**os.environ, **emulator.env, "NO_PROXY": "127.0.0.1,localhost"}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    ) as process:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {client} worker failed to start")
        before, cpu_before = emulator.stats(), emulator.cpu_seconds()
        process.stdin.write("go\n")
        process.stdin.flush()
        result = json.loads(process.stdout.readline())
        after, cpu_after = emulator.stats(), emulator.cpu_seconds()
    calls = {k: v - before["http_calls"].get(k, 0) for k, v in after["http_calls"].items()}
    rate = result["images"] / result["seconds"]
    return {
        "images": result["images"],
        "images_per_s": rate,
        "ratio_to_limit": rate / (concurrency / args.latency),
        "ratio_to_ceiling": rate / ceiling(args.n, concurrency, args.latency),
        "status_calls_per_image": calls.get("status", 0) / max(result["images"], 1),
        "client_cpu_ms_per_image": 1000 * result["cpu_seconds"] / max(result["images"], 1),
        "emulator_cpu_share": (cpu_after - cpu_before) / result["seconds"],
        "load_1min": os.getloadavg()[0],
    }


def ceiling(n: int, concurrency: int, latency: float) -> float:
    """The most images/s any client can reach: ceil(N/C) waves of L seconds each."""
    return n / (math.ceil(n / concurrency) * latency)


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(results: dict[int, dict[str, list[dict]]], args: argparse.Namespace) -> str:
    width, height = PRESET_SIZES[args.image_size]
    lines = [
        f"N={args.n}, L={args.latency:g} s, {args.image_size} ({width}x{height}), "
        f"{'https' if args.tls else 'http'}, median of {args.repeats} runs each",
        "",
        "| C | limit C/L | ceiling | client | images/s | vs C/L | vs ceiling | vs peer | status calls/image "
        "| client CPU ms/image | emulator CPU (share of a core) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for concurrency, by_client in results.items():
        ratios = [
            r["images_per_s"] / p["images_per_s"] for r, p in zip(by_client["resource"], by_client["peer"])
        ]
        for client in CLIENTS:
            m = median_of(by_client[client])
            versus = f"{statistics.median(ratios):.2f}" if client == "resource" else "1"
            cells = [
                str(concurrency),
                f"{concurrency / args.latency:g} img/s",
                f"{ceiling(args.n, concurrency, args.latency):.1f} img/s",
                client,
                f"{m['images_per_s']:.1f}",
                f"{m['ratio_to_limit']:.2f}",
                f"{m['ratio_to_ceiling']:.2f}",
                versus,
                f"{m['status_calls_per_image']:.2f}",
                f"{m['client_cpu_ms_per_image']:.1f}",
                f"{m['emulator_cpu_share']:.2f}",
                f"{m['load_1min']:.2f}",
            ]
            lines.append(f"| {' | '.join(cells)} |")
            busiest = max(run["emulator_cpu_share"] for run in by_client[client])
            if busiest > EMULATOR_BOTTLENECK_SHARE:
                verdicts.append(f"C={concurrency} {client}: the emulator used {busiest:.0%} of a core")
    lines.append("")
    lines.append(
        "emulator: may have been the bottleneck (" + "; ".join(verdicts) + ")"
        if verdicts
        else f"emulator: not the bottleneck (below {EMULATOR_BOTTLENECK_SHARE:.0%} of one core in every run)"
    )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=400, help="images per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64], help="C, one or more")
    parser.add_argument(
        "--latency", type=float, default=1.0, help="L: seconds the emulator takes per request"
    )
    parser.add_argument("--image-size", default="landscape_4_3", choices=sorted(PRESET_SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="serve https (a trustme certificate)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser


def measure_all(args: argparse.Namespace) -> dict[int, dict[str, list[dict]]]:
    """Every client at every C, `repeats` times, alternating which goes first, on one emulator."""
    with tempfile.TemporaryDirectory() as folder:
        emulator = start_emulator(args.latency, Path(folder) if args.tls else None)
        try:
            measure(emulator, "resource", args, max(args.concurrency))  # warm-up: renders every image
            results: dict[int, dict[str, list[dict]]] = {
                c: {k: [] for k in CLIENTS} for c in args.concurrency
            }
            for repeat in range(args.repeats):
                for concurrency in args.concurrency:
                    order = CLIENTS if repeat % 2 == 0 else CLIENTS[::-1]  # neither always goes first
                    for client in order:
                        run = measure(emulator, client, args, concurrency)
                        results[concurrency][client].append(run)
                        print(
                            f"repeat {repeat + 1}, C={concurrency}, {client}: {json.dumps(run)}", flush=True
                        )
        finally:
            emulator.process.terminate()
            emulator.process.wait()
    return results


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.n > RENDERED_CACHE_SIZE:
        parser.error(
            f"--n {args.n} is over the emulator's render cache ({RENDERED_CACHE_SIZE} images): "
            "it would render during the runs, on the clients' CPUs"
        )
    results = measure_all(args)
    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps({str(c): r for c, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
