"""Perceptual hashes of images, computed once from the bytes in memory when a file is stored and kept
in the catalog (`perceptual_hash`), so that the export's near-duplicate filter never decodes an
image again. The catalog holds the 64-bit hash as a signed int64 (two's complement)."""

from __future__ import annotations

import io

import imagehash
from PIL import Image

HASH_BITS = 64
DRAFT_SIDE = 64
"""A JPEG is decoded at the smallest scale (down to 1/8) that keeps both sides at least this; the
hash works on 32x32, so nothing it needs is lost and most of the decoding is skipped."""


def perceptual_hash(image: Image.Image) -> int:
    """The image's 64-bit DCT hash (imagehash.phash), unsigned."""
    return int(str(imagehash.phash(image)), 16)


def perceptual_hash_of(data: bytes) -> int:
    """The perceptual hash of an encoded image."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (DRAFT_SIDE, DRAFT_SIDE))
        return perceptual_hash(image)


def to_int64(value: int) -> int:
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def from_int64(value: int) -> int:
    return value & ((1 << HASH_BITS) - 1)
