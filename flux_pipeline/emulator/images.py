"""Deterministic stand-in images: the same seed, prompt and parameters give the same bytes."""

from __future__ import annotations

import hashlib
import io
import json
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageOps

from ..fal.verify import PIL_FORMATS


def image_digest(params: dict, index: int, source_sha256: str | None = None) -> bytes:
    """A digest of everything that determines one image of a request."""
    canonical = json.dumps(
        {"params": params, "index": index, "source": source_sha256}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()


RENDERED_CACHE_SIZE = 512
"""Images kept once rendered, so a repeated request is served without drawing it again."""


@lru_cache(maxsize=RENDERED_CACHE_SIZE)
def render_image(digest: bytes, width: int, height: int, output_format: str) -> bytes:
    """A real JPEG/PNG of the given size: a two-colour gradient with a few shapes, all drawn
    from the digest, so tests can tell images apart and reproduce them. Rendering costs about
    10 ms of CPU for 1024x768: the last RENDERED_CACHE_SIZE results are kept, so that a benchmark
    repeating its requests measures its client, not the emulator's drawing."""
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
    buffer = io.BytesIO()
    image.save(
        buffer, format=PIL_FORMATS[output_format], **({"quality": 90} if output_format == "jpeg" else {})
    )
    return buffer.getvalue()
