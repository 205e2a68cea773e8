"""Checks a downloaded result file before anyone keeps it."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from .models import CONTENT_TYPES


class InvalidImageError(ValueError):
    """A downloaded file is not the image that was asked for."""


def verify_image(
    data: bytes, content_type: str, *, output_format: str, size: tuple[int, int], max_bytes: int
) -> None:
    """Content type, size limit, and that the bytes decode to an image of `size`."""
    expected_type = CONTENT_TYPES[output_format]
    if content_type != expected_type:
        raise InvalidImageError(f"content type {content_type!r}, expected {expected_type!r}")
    if len(data) > max_bytes:
        raise InvalidImageError(f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            actual = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidImageError(f"bytes do not decode as an image ({exc})") from None
    if actual != tuple(size):
        raise InvalidImageError(f"image is {actual[0]}x{actual[1]}, expected {size[0]}x{size[1]}")
