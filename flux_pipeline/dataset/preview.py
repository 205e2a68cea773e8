"""A small contact sheet of a partition's images for the Dagster UI."""

from __future__ import annotations

import base64
import io

from PIL import Image
from upath import UPath


def contact_sheet(paths: list[UPath], *, thumb: int = 96, columns: int = 6, limit: int = 24) -> bytes | None:
    """PNG bytes of up to `limit` thumbnails in a grid, or None when there are no images."""
    paths = paths[:limit]
    if not paths:
        return None
    rows = (len(paths) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), "white")
    for position, path in enumerate(paths):
        with path.open("rb") as stream, Image.open(stream) as image:
            image.thumbnail((thumb, thumb))
            x, y = (position % columns) * thumb, (position // columns) * thumb
            sheet.paste(
                image.convert("RGB"), (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2)
            )
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
