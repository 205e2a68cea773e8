"""A small real catalog partition for the export and gallery tests: JPEG and PNG files written with
Pillow under an output root (a local folder or a bucket) and their catalog rows, with one of each case
the exports must handle: an NSFW image, an exact duplicate (same bytes), a near duplicate (a few
pixels changed), Redux variations of a generated image, a tiny image, and a prompt full of HTML."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image
from upath import UPath

from flux_pipeline.dataset.catalog.table import CATALOG_SCHEMA, replace_partition
from flux_pipeline.dataset.files.images import EXTENSIONS, image_id
from flux_pipeline.dataset.files.storage import write_bytes_atomically

PARTITION = "shots"
TEXT_ENDPOINT = "fal-ai/flux-pro/v1.1"
REDUX_ENDPOINT = "fal-ai/flux-pro/v1.1/redux"
HOSTILE_PROMPT = """a <b>bold</b> "quoted" & 'odd' prompt <script>window.injected = 1</script><img src=x>"""


def smooth_noise(seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """An image of its own: random colours on a coarse grid, smoothly scaled up."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC))


def encode(pixels: np.ndarray, output_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 95} if output_format == "jpeg" else {}
    Image.fromarray(pixels).save(buffer, format=output_format.upper(), **options)
    return buffer.getvalue()


@dataclass
class Shots:
    catalog_root: UPath
    output_root: UPath
    rows: list[dict] = field(default_factory=list)

    def add(
        self,
        prompt_id: str,
        data: bytes,
        output_format: str = "jpeg",
        *,
        parent: str | None = None,
        index: int = 0,
        nsfw: bool = False,
        prompt: str | None = None,
    ) -> str:
        endpoint = REDUX_ENDPOINT if parent else TEXT_ENDPOINT
        identifier = image_id(PARTITION, prompt_id, endpoint, index)
        file_path = f"{PARTITION}/images/{identifier}.{EXTENSIONS[output_format]}"
        write_bytes_atomically(self.output_root / file_path, data)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        prompt = prompt or f"a picture for {prompt_id}"
        self.rows.append(
            {
                "image_id": identifier,
                "partition": PARTITION,
                "prompt_id": prompt_id,
                "prompt": prompt,
                "returned_prompt": f"{prompt} (enhanced)",
                "endpoint": endpoint,
                "request_id": f"req-{identifier[:8]}",
                "backend": "emulator",
                "image_index": index,
                "seed": 1000 + len(self.rows),
                "width": width,
                "height": height,
                "output_format": output_format,
                "content_hash": hashlib.sha256(data).hexdigest(),
                "file_path": file_path,
                "file_bytes": len(data),
                "nsfw": nsfw,
                "billed_megapixels": 1,
                "megapixel_size": 1048576,
                "billing_unit": "megapixels",
                "unit_price": 0.04,
                "price_source": "configured",
                "cost_usd": 0.04 + 0.001 * len(self.rows),
                "parent_image_id": parent,
                "axes": json.dumps({"subject": prompt_id}),
                "draft_image_id": None,
            }
        )
        return identifier

    def row(self, identifier: str) -> dict:
        return next(r for r in self.rows if r["image_id"] == identifier)

    def write_catalog(self, batch_rows: int = 5) -> None:
        """The rows as a catalog partition, written a few rows at a time."""
        batches = (
            pa.RecordBatch.from_pylist(self.rows[start : start + batch_rows], schema=CATALOG_SCHEMA)
            for start in range(0, len(self.rows), batch_rows)
        )
        replace_partition(self.catalog_root, PARTITION, batches)


@dataclass
class Cases:
    """The image ids of the special rows; each pair is (kept, dropped): the first by image_id stays."""

    parent: str
    variations: list[str]
    nsfw: str
    tiny: str
    hostile: str
    duplicate_pair: tuple[str, str]
    near_pair: tuple[str, str]

    @staticmethod
    def kept_and_dropped(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)


def make_shots(catalog_root: UPath, output_root: UPath, ordinary: int = 12) -> tuple[Shots, Cases]:
    shots = Shots(catalog_root, output_root)
    parent = shots.add("cat", encode(smooth_noise(1), "jpeg"))
    variations = [
        shots.add("cat", encode(smooth_noise(2 + i), "png"), "png", parent=parent, index=i) for i in range(2)
    ]
    nsfw = shots.add("flagged", encode(smooth_noise(4), "jpeg"), nsfw=True)
    original = encode(smooth_noise(5), "jpeg")
    duplicate_pair = Cases.kept_and_dropped(
        shots.add("original", original), shots.add("same-bytes", original)
    )
    base = smooth_noise(6)
    touched = base.copy()
    touched[20:23, 30:33] = 255 - touched[20:23, 30:33]
    near_pair = Cases.kept_and_dropped(
        shots.add("base", encode(base, "png"), "png"), shots.add("touched", encode(touched, "png"), "png")
    )
    tiny = shots.add("tiny", encode(smooth_noise(7, (16, 16)), "jpeg"))
    hostile = shots.add("hostile", encode(smooth_noise(8), "jpeg"), prompt=HOSTILE_PROMPT)
    for i in range(ordinary):
        shots.add(
            f"ordinary-{i:02d}",
            encode(smooth_noise(100 + i), "jpeg" if i % 3 else "png"),
            "jpeg" if i % 3 else "png",
        )
    shots.write_catalog()
    return shots, Cases(parent, variations, nsfw, tiny, hostile, duplicate_pair, near_pair)
