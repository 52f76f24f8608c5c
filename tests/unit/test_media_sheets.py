"""Tests for studiobot.media.sheets with real Pillow encoders and decoders."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from studiobot.media.sheets import contact_sheet

BACKGROUND = (24, 24, 27)
RED = (220, 30, 30)


def _thumb(colour: tuple[int, int, int] = RED, size=(256, 256), fmt: str = "WEBP") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def _open(data: bytes) -> Image.Image:
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "JPEG"
    assert sheet.mode == "RGB"
    return sheet


def _labels(count: int) -> list[str]:
    return [str(i + 1) for i in range(count)]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, (256, 256)), (2, (512, 256)), (3, (768, 256)), (4, (768, 512)), (9, (768, 768))],
)
def test_sheet_size_follows_the_count(count: int, expected: tuple[int, int]) -> None:
    sheet = _open(contact_sheet([_thumb()] * count, _labels(count)))

    assert sheet.size == expected


def test_columns_and_cell_are_honoured() -> None:
    sheet = _open(contact_sheet([_thumb()] * 5, _labels(5), cell=100, columns=2))

    assert sheet.size == (200, 300)


@pytest.mark.parametrize(
    ("count", "labels"), [(0, 0), (10, 10), (3, 2), (3, 4)], ids=["none", "ten", "short", "long"]
)
def test_refuses_wrong_counts(count: int, labels: int) -> None:
    with pytest.raises(ValueError):
        contact_sheet([_thumb()] * count, _labels(labels))


@pytest.mark.parametrize(("cell", "columns"), [(16, 3), (256, 0)])
def test_refuses_bad_geometry(cell: int, columns: int) -> None:
    with pytest.raises(ValueError):
        contact_sheet([_thumb()], ["1"], cell=cell, columns=columns)


def test_thumbnails_are_fitted_centred_and_placed_in_reading_order() -> None:
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240)]
    wide = _thumb(colours[0], size=(200, 100))  # enlarged to fill the cell's width
    thumbs = [wide, *(_thumb(c, size=(64, 64), fmt="PNG") for c in colours[1:])]

    sheet = _open(contact_sheet(thumbs, ["", "", "", ""], cell=200, columns=2))

    assert _near(sheet.getpixel((100, 100)), colours[0])
    assert _near(sheet.getpixel((195, 100)), colours[0])  # full width, less the margin
    assert _near(sheet.getpixel((100, 20)), BACKGROUND)  # letterbox above the wide one
    assert _near(sheet.getpixel((300, 100)), colours[1])
    assert _near(sheet.getpixel((100, 300)), colours[2])
    assert _near(sheet.getpixel((300, 300)), colours[3])
    assert _near(sheet.getpixel((200, 100)), BACKGROUND)  # the gap between cells 0 and 1


def test_a_large_jpeg_is_scaled_down_to_its_cell() -> None:
    photo = _thumb((30, 30, 220), size=(1600, 1200), fmt="JPEG")

    sheet = _open(contact_sheet([photo], [""]))

    assert sheet.size == (256, 256)
    assert _near(sheet.getpixel((8, 128)), (30, 30, 220))  # the full width, less the margin
    assert _near(sheet.getpixel((128, 20)), BACKGROUND)  # letterboxed: 4:3 in a square


def test_transparent_pixels_show_the_background() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 255, 255, 0)).save(out, "PNG")

    sheet = _open(contact_sheet([out.getvalue()], [""], background=(0, 90, 0)))

    assert _near(sheet.getpixel((128, 128)), (0, 90, 0))


def _badge_area(sheet: Image.Image) -> Image.Image:
    return sheet.crop((8, 8, 60, 60))  # the top-left corner of cell 0's picture, under the badge


def _far_from(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 60) -> int:
    """How many pixels of ``image`` differ from ``colour`` by over ``tolerance`` in a channel."""
    return _count_far(np.asarray(image), np.array(colour), tolerance)


def _count_far(a: np.ndarray, b: np.ndarray, tolerance: int = 60) -> int:
    difference = np.abs(a.astype(int) - b.astype(int)).max(axis=-1)
    return int((difference > tolerance).sum())


def test_label_is_drawn_in_a_badge_over_the_picture() -> None:
    labelled = _open(contact_sheet([_thumb()], ["1"]))
    bare = _open(contact_sheet([_thumb()], [""]))

    assert _far_from(_badge_area(bare), RED) == 0  # without a label the corner is the picture
    assert _far_from(_badge_area(labelled), RED) > 400  # a badge covers much of the corner
    assert _near(labelled.getpixel((128, 128)), RED)  # and only the corner


def test_the_badge_shows_the_label_text() -> None:
    one = _badge_area(_open(contact_sheet([_thumb()], ["1"])))
    seven = _badge_area(_open(contact_sheet([_thumb()], ["7"])))

    assert _count_far(np.asarray(one), np.asarray(seven)) > 20


def test_badge_stays_visible_on_a_white_picture() -> None:
    white = _thumb((255, 255, 255))

    sheet = _open(contact_sheet([white], ["1"]))

    assert _far_from(_badge_area(sheet), (255, 255, 255)) > 40  # rim and digit


@pytest.mark.parametrize(
    "broken",
    [b"", b"not an image", _thumb(fmt="PNG")[:60]],
    ids=["empty", "garbage", "truncated"],
)
def test_broken_thumbnail_becomes_a_placeholder(broken: bytes) -> None:
    green = (30, 200, 30)

    sheet = _open(contact_sheet([_thumb(), broken, _thumb(green)], ["1", "2", "3"]))

    assert sheet.size == (768, 256)
    assert _near(sheet.getpixel((128, 128)), RED)
    assert _near(sheet.getpixel((640, 128)), green)
    placeholder = sheet.crop((256 + 8, 64, 512 - 8, 256 - 8))
    assert _far_from(placeholder, RED) == placeholder.width * placeholder.height
    assert _far_from(placeholder, BACKGROUND, tolerance=12) > 1000  # drawn, not left empty
    fill = sheet.getpixel((300, 80))
    word = sheet.crop((300, 100, 470, 156))  # "missing", written across the middle
    assert _far_from(word, fill, tolerance=40) > 100


def test_every_broken_thumbnail_gets_the_same_placeholder() -> None:
    first = contact_sheet([b"", b"x"], ["1", "2"])

    assert contact_sheet([b"y" * 99, b"\x89PNG"], ["1", "2"]) == first


def test_decompression_bomb_limit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    warned = _thumb(size=(120, 120), fmt="PNG")  # over the limit: Pillow only warns
    refused = _thumb(size=(300, 300), fmt="PNG")  # over twice the limit: Pillow raises
    within = _thumb(size=(90, 90), fmt="PNG")

    with pytest.warns(Image.DecompressionBombWarning):
        sheet = contact_sheet([warned, refused, within], ["", "", ""])
    expected = contact_sheet([b"", b"", within], ["", "", ""])

    assert sheet == expected


def test_same_inputs_give_the_same_bytes_and_different_inputs_differ() -> None:
    thumbs = [_thumb((i * 25, 100, 200 - i * 20)) for i in range(9)]

    first = contact_sheet(thumbs, _labels(9))

    assert contact_sheet(list(thumbs), _labels(9)) == first
    assert contact_sheet([*thumbs[:8], _thumb((0, 0, 0))], _labels(9)) != first


def _near(pixel, expected, tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))
