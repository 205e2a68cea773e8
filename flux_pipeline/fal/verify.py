"""Checks a downloaded result file before anyone keeps it, without decoding its pixels.

Pillow reads only the header (format and size); the file is then checked to be whole: a JPEG
must end with its end-of-image marker (inside the compressed data a 0xFF byte is always
stuffed, so the marker cannot appear there and a cut file lacks it), and every PNG chunk must be
complete with a matching CRC, the last being IEND. That rejects truncated and corrupted
downloads and images of the wrong size or format for well under a millisecond, where a full
decode takes several (and a decompression bomb would take far more).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, UnidentifiedImageError

from .models import CONTENT_TYPES

PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
JPEG_END = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK_FRAME = 12
"""Length, type and CRC around each PNG chunk's data."""


class InvalidImageError(ValueError):
    """A downloaded file is not the image that was asked for."""


def verify_image(data: bytes, content_type: str, *, output_format: str, size: tuple[int, int]) -> None:
    """Content type, format and size as asked, and the file whole; else InvalidImageError."""
    expected_type = CONTENT_TYPES[output_format]
    if content_type != expected_type:
        raise InvalidImageError(f"content type {content_type!r}, expected {expected_type!r}")
    try:
        with Image.open(io.BytesIO(data), formats=[PIL_FORMATS[output_format]]) as image:
            actual = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"bytes are not a {output_format} image ({exc})") from None
    if actual != tuple(size):
        raise InvalidImageError(f"image is {actual[0]}x{actual[1]}, expected {size[0]}x{size[1]}")
    problem = png_problem(data) if output_format == "png" else jpeg_problem(data)
    if problem:
        raise InvalidImageError(f"{output_format} file is not whole: {problem}")


def jpeg_problem(data: bytes) -> str | None:
    return None if data.endswith(JPEG_END) else "no end-of-image marker"


def png_problem(data: bytes) -> str | None:
    """Why the PNG's chunks are not all there and intact up to a final IEND, or None."""
    view = memoryview(data)
    offset = len(PNG_SIGNATURE)
    while offset + PNG_CHUNK_FRAME <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + PNG_CHUNK_FRAME + length
        if end > len(data):
            return f"{kind.decode('latin-1')} chunk cut short"
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[offset + 4 : end - 4]) != crc:
            return f"{kind.decode('latin-1')} chunk fails its CRC"
        if kind == b"IEND":
            return None if end == len(data) else "data after IEND"
        offset = end
    return "no IEND chunk"
