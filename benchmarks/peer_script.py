"""The script a competent user writes instead of this project: the peer of benchmarks.whole_job.

    python -m benchmarks.peer_script --table prompts.parquet --out folder --concurrency 16

It reads the prompt table with pandas, sends every row through `fal_client.AsyncClient` under an
`asyncio.Semaphore`, downloads each image with httpx, writes it to `out/images/`, and writes a
Parquet catalog (prompt, seed, size, request id, NSFW flag, file, SHA-256). With `--url` it calls
that fal stand-in instead of fal.ai. No ledger, checks, gallery or exports: what it does not do
is what the project adds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

import fal_client
import httpx
import pandas as pd

ENDPOINT = "fal-ai/flux-pro/v1.1"


def point_fal_client_at(url: str) -> None:
    """Send fal_client's calls to `url`. The host settings of protocol.md 1.1 are read at import
    and allow only https; these module globals, looked up at call time, reach plain http too."""
    fal_client.client.QUEUE_URL_FORMAT = f"{url}/"
    fal_client.client.RUN_URL_FORMAT = f"{url}/run/"


async def generate(table: pd.DataFrame, out: Path, concurrency: int) -> list[dict]:
    fal = fal_client.AsyncClient()
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    (out / "images").mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(limits=limits, timeout=120) as downloads:

        async def one(row: dict) -> dict:
            arguments = {"prompt": row["prompt"], "seed": int(row["seed"]), "image_size": row["image_size"]}
            async with slots:
                handle = await fal.submit(ENDPOINT, arguments)
                result = await handle.get()
                image = result["images"][0]
                response = await downloads.get(image["url"])
                response.raise_for_status()
            path = out / "images" / f"{row['prompt_id']}.jpg"
            await asyncio.to_thread(path.write_bytes, response.content)
            return {
                **arguments,
                "prompt_id": row["prompt_id"],
                "request_id": handle.request_id,
                "width": image["width"],
                "height": image["height"],
                "has_nsfw_concept": result["has_nsfw_concepts"][0],
                "file": str(path),
                "sha256": hashlib.sha256(response.content).hexdigest(),
            }

        return await asyncio.gather(*(one(row) for row in table.to_dict("records")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--url", help="a fal stand-in (the emulator) instead of fal.ai")
    args = parser.parse_args()
    if args.url:
        point_fal_client_at(args.url)
    rows = asyncio.run(generate(pd.read_parquet(args.table), args.out, args.concurrency))
    pd.DataFrame(rows).to_parquet(args.out / "catalog.parquet")
    print(f"{len(rows)} images in {args.out}")


if __name__ == "__main__":
    main()
