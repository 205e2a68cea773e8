"""Deterministic stand-in images: the same seed, prompt and parameters give the same bytes."""

from __future__ import annotations

import hashlib
import io
import json
import random
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageOps

from ..fal.verify import PIL_FORMATS


def image_digest(params: dict, index: int, source_sha256: str | None = None) -> bytes:
    """A digest of everything that determines one image of a request."""
    canonical = json.dumps(
        {"params": params, "index": index, "source": source_sha256}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()


RENDERED_CACHE_SIZE = 1024
"""Images kept once rendered, so a repeated request is served without drawing it again."""
IMAGE_DETAILS = ("flat", "photo")
"""`flat`: smooth shapes (a 1024x768 JPEG is about 30 KB); `photo`: the same with film grain, as
incompressible as a photograph (about 250 KB), for measuring clients with real-sized files."""
PHOTO_GRAIN = 0.37
"""The grain's amplitude, as a share of full-range uniform noise."""


@lru_cache(maxsize=RENDERED_CACHE_SIZE)
def render_image(digest: bytes, width: int, height: int, output_format: str, detail: str = "flat") -> bytes:
    """A real JPEG/PNG of the given size: a two-colour gradient with a few shapes (and, for
    `photo` detail, grain), all drawn from the digest, so tests can tell images apart and
    reproduce them. The last RENDERED_CACHE_SIZE results are kept, so that a benchmark repeating
    its requests measures its client, not the emulator's drawing."""
    rng = random.Random(digest)
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    gradient = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize((width, height))
    image = ImageOps.colorize(gradient, colours[0], colours[1])
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(3, 8)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = min(width, x0 + rng.randrange(8, max(9, width // 2)))
        y1 = min(height, y0 + rng.randrange(8, max(9, height // 2)))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    if detail == "photo":
        half = (max(1, width // 2), max(1, height // 2))
        grain = Image.frombytes("L", half, rng.randbytes(half[0] * half[1]))
        grain = grain.point(lambda v: round(128 + (v - 128) * PHOTO_GRAIN))
        grain = grain.resize((width, height), Image.Resampling.BILINEAR)
        image = ImageChops.add(image, Image.merge("RGB", [grain] * 3), offset=-128)
    buffer = io.BytesIO()
    image.save(
        buffer, format=PIL_FORMATS[output_format], **({"quality": 90} if output_format == "jpeg" else {})
    )
    return buffer.getvalue()
