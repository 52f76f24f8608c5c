"""Contact sheets: up to nine stored thumbnails on one numbered picture, for gallery pages.

A gallery page shows one picture rather than nine attachments, each thumbnail marked with the
number a person types or clicks to pick it. The thumbnails come from the store, so any of them
may be gone or damaged by the time a page is drawn: such a cell becomes a "missing" placeholder
instead of failing the page.

Synchronous CPU work (under a tenth of a second for nine thumbnails); async callers use
``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = ["MAX_THUMBNAILS", "contact_sheet"]

MAX_THUMBNAILS = 9

_MIN_CELL = 32
_BADGE_FILL = (250, 250, 250)
_BADGE_TEXT = (24, 24, 27)
_BADGE_EDGE = (24, 24, 27)
_PLACEHOLDER_FILL = (52, 52, 58)
_PLACEHOLDER_TEXT = (150, 150, 160)

RGB = tuple[int, int, int]
# Without FreeType, load_default() falls back to a fixed-size bitmap font.
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def contact_sheet(
    thumbnails: Sequence[bytes],
    labels: Sequence[str],
    *,
    cell: int = 256,
    columns: int = 3,
    background: RGB = (24, 24, 27),
) -> bytes:
    """Lay thumbnails out in a grid, each with its label in a badge, and encode it as JPEG.

    The grid is ``min(columns, len(thumbnails))`` cells wide and as many rows high as needed
    (with 3 columns: 1-3 images make one row, 4-6 two, 7-9 three). Thumbnail ``i`` goes to cell
    ``i`` in reading order, scaled up or down to fit inside the cell less a small margin (the
    gap between pictures), keeping its aspect ratio, and centred; transparent parts show the
    background. ``labels[i]`` is drawn in a light badge with dark text in the cell's top-left
    corner; an empty label draws no badge.

    A thumbnail Pillow cannot decode (empty, truncated, not an image) or whose pixel count is
    above ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb limit, honoured as set) is
    drawn as a plain placeholder cell reading "missing", so one deleted or damaged file does not
    break a gallery page. EXIF orientation is not applied: stored thumbnails carry no metadata.

    The same arguments always give the same bytes.

    Args:
        thumbnails: 1 to 9 encoded images (the stored WEBP thumbnails, or anything Pillow reads).
        labels: One label per thumbnail, e.g. ``"1"`` to ``"9"``.
        cell: Side of each square cell, in pixels (at least 32).
        columns: Largest number of cells per row (at least 1).
        background: RGB colour behind and between the pictures.

    Returns:
        RGB JPEG bytes (quality 85) of ``cols * cell`` x ``rows * cell`` pixels, where
        ``cols = min(columns, len(thumbnails))`` and ``rows = ceil(len(thumbnails) / cols)``.

    Raises:
        ValueError: No thumbnails or more than 9, ``labels`` of another length, ``cell`` below
            32 or ``columns`` below 1.
    """
    count = len(thumbnails)
    if not 1 <= count <= MAX_THUMBNAILS:
        raise ValueError(f"a contact sheet holds 1 to {MAX_THUMBNAILS} thumbnails, not {count}")
    if len(labels) != count:
        raise ValueError(f"{count} thumbnails need {count} labels, not {len(labels)}")
    if cell < _MIN_CELL:
        raise ValueError(f"cell must be at least {_MIN_CELL} pixels")
    if columns < 1:
        raise ValueError("columns must be at least 1")

    cols = min(columns, count)
    rows = math.ceil(count / cols)
    sheet = Image.new("RGB", (cols * cell, rows * cell), background)
    draw = ImageDraw.Draw(sheet)
    # Half the gap on each side of every cell, so neighbours sit a full gap apart.
    margin = max(2, cell // 64)
    side = cell - 2 * margin
    font = ImageFont.load_default(size=max(10, cell // 10))
    for index, (data, label) in enumerate(zip(thumbnails, labels, strict=True)):
        left, top = (index % cols) * cell, (index // cols) * cell
        box = (left + margin, top + margin, left + cell - margin - 1, top + cell - margin - 1)
        picture = _decode(data, side)
        if picture is None:
            _draw_placeholder(draw, box, font)
        else:
            fitted = ImageOps.contain(picture, (side, side))
            position = (left + (cell - fitted.width) // 2, top + (cell - fitted.height) // 2)
            sheet.paste(fitted, position, fitted)
        if label:
            _draw_badge(draw, (box[0], box[1]), label, font, cell)
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=85)
    return out.getvalue()


def _decode(data: bytes, side: int) -> Image.Image | None:
    """The picture as RGBA, or None when it cannot (or must not) be decoded.

    Args:
        data: The encoded image.
        side: The square it will be fitted into, in pixels; a large JPEG is decoded at a
            reduced scale no smaller than that.
    """
    try:
        image = Image.open(io.BytesIO(data))
        limit = Image.MAX_IMAGE_PIXELS
        # Pillow only warns between the limit and twice it; decoding there is what it warns of.
        if limit is not None and image.width * image.height > limit:
            return None
        image.draft("RGB", (side, side))  # libjpeg scales by 1/2..1/8 while decoding; else no-op
        image.load()
        return image.convert("RGBA")
    except Exception:  # Pillow raises a zoo of types (OSError, SyntaxError, struct.error...)
        return None


def _draw_placeholder(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], font: _Font
) -> None:
    draw.rectangle(box, fill=_PLACEHOLDER_FILL)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    draw.text(centre, "missing", fill=_PLACEHOLDER_TEXT, font=font, anchor="mm")


def _draw_badge(
    draw: ImageDraw.ImageDraw,
    corner: tuple[int, int],
    label: str,
    font: _Font,
    cell: int,
) -> None:
    """A rounded light box holding ``label``, inset ``cell // 32`` px from ``corner``."""
    inset = max(2, cell // 32)
    text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), label, font=font)
    pad = max(3, round((text_bottom - text_top) * 0.45))
    height = (text_bottom - text_top) + 2 * pad
    width = max(height, (text_right - text_left) + 2 * pad)  # a single digit gets a square
    x0, y0 = corner[0] + inset, corner[1] + inset
    outline = max(1, cell // 128)  # a dark rim keeps the light badge visible on white pictures
    draw.rounded_rectangle(
        (x0, y0, x0 + width, y0 + height),
        radius=height // 4,
        fill=_BADGE_FILL,
        outline=_BADGE_EDGE,
        width=outline,
    )
    draw.text(
        (x0 + width / 2, y0 + height / 2), label, fill=_BADGE_TEXT, font=font, anchor="mm"
    )
