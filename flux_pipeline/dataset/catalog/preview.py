"""A small contact sheet of a partition's images for the Dagster UI: thumbnails in a grid, each with
its label (e.g. its prompt_id) in small text under it."""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw, ImageFont
from upath import UPath

LABEL_HEIGHT = 14


def contact_sheet(
    paths: list[UPath], *, thumb: int = 96, columns: int = 6, limit: int = 24, labels: list[str] | None = None
) -> bytes | None:
    """PNG bytes of up to `limit` thumbnails in a grid, or None when there are no images. With
    `labels` (one per path), each tile gets its label under it, shortened to the tile's width."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} images")
    paths = paths[:limit]
    if not paths:
        return None
    cell = thumb + (LABEL_HEIGHT if labels else 0)
    rows = (len(paths) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb, rows * cell), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for position, path in enumerate(paths):
        x, y = (position % columns) * thumb, (position // columns) * cell
        with path.open("rb") as stream, Image.open(stream) as image:
            image.thumbnail((thumb, thumb))
            sheet.paste(
                image.convert("RGB"), (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2)
            )
        if labels:
            text = _fit(draw, font, labels[position], thumb - 4)
            left = x + (thumb - draw.textlength(text, font=font)) // 2
            draw.text((left, y + thumb + 1), text, fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _fit(
    draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str, width: int
) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels."""
    while draw.textlength(text, font=font) > width and len(text) > 1:
        text = text[:-2] + "…"
    return text


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
