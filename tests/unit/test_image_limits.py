"""The default pixel limit refuses a real PNG bomb from its header, before any pixel is decoded.

A 6000 x 6000 one-bit PNG of zeros is 36 megapixels in about 4.5 KB; decoded, Pillow holds one
byte per pixel (36 MB). Pillow allocates pixels with its own allocator, which tracemalloc cannot
see, so "nothing decoded" is proven with Pillow's allocation counter as well.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from studiobot.config import Settings
from studiobot.media.images import InvalidImage, clean_image

SIDE = 6000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = SIDE) -> bytes:
    """A valid ``side`` x ``side`` one-bit grayscale PNG, all black, compressed as far as zlib goes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_the_default_limit_is_4096_squared() -> None:
    assert Settings(_env_file=None).max_image_pixels == 4096 * 4096 == 16_777_216


def test_a_36_megapixel_png_of_a_few_kb_is_refused_without_decoding() -> None:
    bomb = png_bomb()
    assert len(bomb) < 8 * 1024
    images_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="too many pixels"):
            clean_image(bomb, max_pixels=Settings(_env_file=None).max_image_pixels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 20 * 2**20
    assert Image.core.get_stats()["new_count"] == images_before  # no pixel buffer was allocated


def test_pillow_itself_refuses_it_under_the_limit_the_app_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    # build_app sets this for the whole process, so every Image.open (sheets, previews) is bounded.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Settings(_env_file=None).max_image_pixels)

    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_bomb()))
