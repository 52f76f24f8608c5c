"""Tests for studiobot.media.images with real Pillow encoders and decoders."""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, PngImagePlugin, features

from studiobot.media.images import CleanImage, InvalidImage, clean_image, grid, thumbnail

SECRET = "SecretCam-9000"


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A noisy RGB image: incompressible enough that cutting the file cuts pixel data."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = SECRET  # Make
    exif[0x0110] = SECRET  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's opening."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def _reopen(clean: CleanImage) -> Image.Image:
    image = Image.open(io.BytesIO(clean.data))
    image.load()
    return image


# --- cleaning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_clean_keeps_format_and_reports_facts(fmt: str, mime: str, ext: str) -> None:
    import hashlib

    clean = clean_image(_encode(_noise((40, 30)), fmt))

    assert (clean.mime, clean.ext, clean.width, clean.height) == (mime, ext, 40, 30)
    assert clean.sha256 == hashlib.sha256(clean.data).hexdigest()
    assert _reopen(clean).format == fmt


def test_png_pixels_are_unchanged() -> None:
    original = _noise((32, 32), seed=3)

    clean = clean_image(_encode(original, "PNG"))

    assert _reopen(clean).tobytes() == original.tobytes()


def test_png_text_chunks_and_exif_are_stripped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", SECRET)
    info.add_text("parameters", f"prompt: {SECRET}", zip=True)
    info.add_itxt("Description", SECRET)
    data = _encode(_noise((24, 24)), "PNG", pnginfo=info, exif=_exif().tobytes())
    assert SECRET.encode() in data or b"zTXt" in data  # the fixture really carries metadata

    clean = clean_image(data)

    assert SECRET.encode() not in clean.data
    assert set(_png_chunk_types(clean.data)) <= {b"IHDR", b"IDAT", b"IEND"}
    image = _reopen(clean)
    assert image.text == {}
    assert not image.getexif()


def test_bytes_after_png_end_are_dropped() -> None:
    polyglot = _encode(_noise((16, 16)), "PNG") + b"PK\x03\x04" + SECRET.encode()

    clean = clean_image(polyglot)

    assert clean.data.endswith(_png_chunk(b"IEND", b""))
    assert SECRET.encode() not in clean.data


def test_png_palette_transparency_survives() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    data = _encode(image, "PNG", transparency=0)

    reopened = _reopen(clean_image(data)).convert("RGBA")

    assert reopened.getpixel((0, 0))[3] == 0
    assert reopened.getpixel((1, 1)) == (255, 0, 0, 255)


@pytest.mark.skipif(not features.check("littlecms2"), reason="Pillow built without LittleCMS")
def test_icc_profile_is_kept_deliberately() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    for fmt in ("PNG", "JPEG", "WEBP"):
        clean = clean_image(_encode(_noise((16, 16)), fmt, icc_profile=icc))
        assert _reopen(clean).info.get("icc_profile") == icc, fmt


def test_jpeg_exif_comment_and_xmp_are_stripped() -> None:
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>{SECRET}</rdf:Description>'
    data = _encode(
        _noise((32, 32)),
        "JPEG",
        exif=_exif().tobytes(),
        comment=SECRET.encode(),
        xmp=(xmp + "</x:xmpmeta>").encode(),
    )
    assert data.count(SECRET.encode()) >= 3

    clean = clean_image(data)

    assert SECRET.encode() not in clean.data
    image = _reopen(clean)
    assert not image.getexif()
    assert "comment" not in image.info
    assert "xmp" not in image.info


def test_webp_exif_and_xmp_are_stripped() -> None:
    data = _encode(
        _noise((32, 32)), "WEBP", exif=_exif().tobytes(), xmp=f"<x>{SECRET}</x>".encode()
    )
    assert SECRET.encode() in data

    clean = clean_image(data)

    assert SECRET.encode() not in clean.data
    assert not _reopen(clean).getexif()


def _half_red_half_blue() -> Image.Image:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    return image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied_then_dropped(fmt: str) -> None:
    # Orientation 6: the camera was turned; show the picture rotated 90 degrees clockwise.
    data = _encode(_half_red_half_blue(), fmt, exif=_exif(orientation=6).tobytes())

    clean = clean_image(data)

    assert (clean.width, clean.height) == (20, 40)
    image = _reopen(clean).convert("RGB")
    assert not image.getexif()
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")

    image = _reopen(clean_image(data))

    assert image.mode == "RGB"
    assert image.getpixel((4, 4))[0] > 200


# --- refusals -------------------------------------------------------------------------------


def test_decompression_bomb_header_is_refused_cheaply() -> None:
    bomb = _png_claiming(100_000, 100_000)
    assert len(bomb) < 200

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidImage, match="too many pixels"):
            clean_image(bomb)
        # Between Pillow's warning limit and its error limit: must be an error, not a warning.
        with pytest.raises(InvalidImage, match="too many pixels"):
            clean_image(_png_claiming(10_000, 10_000))

    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pixel_limit_is_ours_not_pillows() -> None:
    with pytest.raises(InvalidImage, match="too many pixels"):
        clean_image(_png_claiming(8_000, 8_000))  # 64 MP: Pillow would allow it
    with pytest.raises(InvalidImage, match="too many pixels"):
        clean_image(_encode(_noise((20, 20)), "PNG"), max_pixels=399)
    assert clean_image(_encode(_noise((20, 20)), "PNG"), max_pixels=400).width == 20


def test_too_many_bytes_is_refused() -> None:
    data = _encode(_noise((20, 20)), "PNG")

    with pytest.raises(InvalidImage, match="too large"):
        clean_image(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_refused(fmt: str) -> None:
    data = _encode(_noise((64, 64)), fmt)

    with pytest.raises(InvalidImage):
        clean_image(data[: len(data) // 2])


def test_png_with_bad_crc_is_refused() -> None:
    data = bytearray(_encode(_noise((16, 16)), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT

    with pytest.raises(InvalidImage):
        clean_image(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_encode(_noise((8, 8)), "GIF"), id="gif"),
        pytest.param(_encode(_noise((8, 8)), "BMP"), id="bmp"),
        pytest.param(_encode(_noise((8, 8)), "TIFF"), id="tiff"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b"hello, this is plain text", id="text"),
        pytest.param(b"", id="empty"),
    ],
)
def test_other_formats_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        clean_image(data)


def test_refusal_messages_are_user_safe() -> None:
    with pytest.raises(InvalidImage) as refused:
        clean_image(_encode(_noise((8, 8)), "GIF"))

    assert str(refused.value) == "Only PNG, JPEG and WEBP images are accepted."


_VALID = [_encode(_noise((12, 10), seed=i), fmt) for i, fmt in enumerate(("PNG", "JPEG", "WEBP"))]
_MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=256),
        st.tuples(st.sampled_from(_MAGIC), st.binary(max_size=256)).map(b"".join),
        st.tuples(
            st.sampled_from(_VALID),
            st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
            st.integers(0, 1),
        ).map(lambda t: _mutate(*t)),
    )
)
def test_clean_image_raises_only_invalid_image(data: bytes) -> None:
    try:
        clean = clean_image(data)
    except InvalidImage:
        return
    assert _reopen(clean).size == (clean.width, clean.height)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out[: len(out) // 2] if cut else out)


# --- previews -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1024, 512), (256, 128)), ((512, 1024), (128, 256)), ((100, 50), (100, 50))],
)
def test_thumbnail_fits_and_keeps_aspect(size, expected) -> None:
    clean = clean_image(_encode(_noise(size), "PNG"))

    thumb = Image.open(io.BytesIO(thumbnail(clean)))

    assert thumb.format == "WEBP"
    assert thumb.size == expected


def test_thumbnail_custom_size_and_jpeg_without_cached_pixels() -> None:
    clean = clean_image(_encode(_noise((800, 600)), "JPEG"))
    bare = dataclasses.replace(clean, _pixels=None)  # as if built from stored bytes

    assert Image.open(io.BytesIO(thumbnail(bare, size=100))).size == (100, 75)


def test_thumbnail_of_16_bit_png_is_not_clipped_to_white() -> None:
    data = _encode(Image.new("I;16", (32, 32), 32_768), "PNG")

    thumb = Image.open(io.BytesIO(thumbnail(clean_image(data)))).convert("L")

    assert 100 < thumb.getpixel((16, 16)) < 160


def _solid(colour: tuple[int, int, int], size=(300, 200), fmt="PNG") -> CleanImage:
    return clean_image(_encode(Image.new("RGB", size, colour), fmt))


def test_grid_layout_size_and_blank_cells() -> None:
    red, green = _solid((255, 0, 0)), _solid((0, 255, 0), size=(100, 400), fmt="JPEG")

    sheet = Image.open(io.BytesIO(grid([red, green])))

    assert sheet.format == "JPEG"
    assert sheet.size == (1032, 1032)  # 2 * 512 + gap of 8
    assert _near(sheet.getpixel((256, 256)), (255, 0, 0))  # centre of cell 0
    assert _near(sheet.getpixel((256, 30)), (38, 38, 38))  # letterbox above the wide image
    assert _near(sheet.getpixel((520 + 256, 256)), (0, 255, 0))  # centre of cell 1
    assert _near(sheet.getpixel((520 + 30, 256)), (38, 38, 38))  # pillarbox beside the tall one
    assert _near(sheet.getpixel((256, 520 + 256)), (38, 38, 38))  # empty cell 2
    assert _near(sheet.getpixel((516, 256)), (38, 38, 38))  # the gap


def test_grid_enlarges_small_images_and_honours_cell() -> None:
    sheet = Image.open(io.BytesIO(grid([_solid((0, 0, 255), size=(10, 10))] * 4, cell=64)))

    assert sheet.size == (130, 130)
    assert _near(sheet.getpixel((2, 2)), (0, 0, 255))  # the 10 px image fills its 64 px cell


def test_grid_differs_when_inputs_differ() -> None:
    a = [_solid((255, 0, 0)), _solid((0, 255, 0)), _solid((0, 0, 255)), _solid((9, 9, 9))]
    b = [*a[:3], _solid((250, 250, 250))]

    assert grid(a) == grid(a)
    assert grid(a) != grid(b)


def test_grid_uses_alpha_over_the_background() -> None:
    clear = clean_image(_encode(Image.new("RGBA", (50, 50), (255, 255, 255, 0)), "PNG"))

    sheet = Image.open(io.BytesIO(grid([clear], cell=50)))

    assert _near(sheet.getpixel((25, 25)), (38, 38, 38))


@pytest.mark.parametrize("images", [[], [None] * 5])
def test_grid_refuses_wrong_counts(images) -> None:
    with pytest.raises(ValueError):
        grid(images)


def _near(pixel, expected, tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))
