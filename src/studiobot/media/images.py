"""Validate, clean and preview generated images with Pillow.

Everything a provider or a user hands us goes through :func:`clean_image` before it is stored or
posted: it proves the bytes are a real PNG, JPEG or WEBP of sane size by decoding every pixel,
applies the EXIF orientation and writes the image out again without metadata (EXIF, XMP, PNG
text chunks, JPEG comments, timestamps).

The ICC colour profile is the one piece of metadata kept, deliberately: it describes colours, not
people or devices, and dropping it would visibly shift wide-gamut (e.g. Display P3) pictures. It
is dropped only when the pixels leave its colour model (a CMYK JPEG converted to RGB).

:func:`thumbnail` and :func:`grid` build the previews posted in chat. All functions are
synchronous CPU work; async callers run them in ``asyncio.to_thread``. This module imports nothing
else from studiobot so it can be used anywhere.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import ExifTags, Image

__all__ = ["CleanImage", "InvalidImage", "clean_image", "grid", "thumbnail"]

_FORMATS = ("PNG", "JPEG", "WEBP")
# Pillow reports multi-picture JPEGs (phone cameras) as MPO; the first picture is a plain JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Critical chunks, palette transparency and the ICC profile. Everything else (tEXt/zTXt/iTXt,
# eXIf, tIME, pHYs, APNG frames, private chunks...) is metadata or animation we do not keep.
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"tRNS", b"iCCP", b"IDAT", b"IEND"})

# Decoded pixels ride along with a CleanImage so thumbnail() and grid() need not decode the file
# again (a 1024x1024 PNG costs ~20 ms per decode). Above this size the memory is not worth it.
_KEEP_PIXELS_MAX = 2048 * 2048

# warnings.catch_warnings swaps a process-wide filter list (Python < 3.14), so two threads entering
# it at once can leave each other's filters behind. Holding this lock keeps our own calls from
# racing; it only covers Image.open, which reads the header and costs microseconds.
_OPEN_LOCK = threading.Lock()

_GRID_BACKGROUND = (38, 38, 38)

# EXIF orientation -> the transpose that shows the picture upright. This is the table of
# ImageOps.exif_transpose, used directly because that function also rewrites the EXIF and XMP
# we are about to drop, and can fail on a malformed block.
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class InvalidImage(Exception):
    """The bytes are not an image we accept. ``str(error)`` is safe to show to the user."""


@dataclass(frozen=True)
class CleanImage:
    """A validated image written without metadata.

    Attributes:
        data: The encoded image bytes.
        mime: ``image/png``, ``image/jpeg`` or ``image/webp``.
        ext: File extension without the dot: ``png``, ``jpg`` or ``webp``.
        width: Width in pixels (after EXIF orientation).
        height: Height in pixels (after EXIF orientation).
        sha256: Lower-case hex SHA-256 of ``data``.
    """

    data: bytes
    mime: str
    ext: str
    width: int
    height: int
    sha256: str
    # Private cache of the decoded pixels, set by clean_image(); never compared or shown.
    _pixels: Image.Image | None = field(default=None, repr=False, compare=False)


def clean_image(
    data: bytes, *, max_pixels: int = 40_000_000, max_bytes: int = 30 * 2**20
) -> CleanImage:
    """Validate image bytes and write them out again, in the same format, without metadata.

    * PNG stays PNG. When no EXIF orientation has to be applied, the file is rebuilt from its
      image chunks only (IHDR, PLTE, tRNS, iCCP, IDAT, IEND), which is lossless and tens of
      times faster than recompressing; otherwise it is re-encoded (``optimize=False``).
    * JPEG is re-encoded as JPEG, quality 95.
    * WEBP is re-encoded as lossy WEBP, quality 95 (``method=2``: as small as the default method
      at less than half the time).

    Only the first frame of an animated PNG/WEBP or multi-picture JPEG is kept.

    Args:
        data: The encoded image as received.
        max_pixels: Largest accepted width x height, checked from the header before decoding so a
            decompression bomb is refused without allocating its pixels.
        max_bytes: Largest accepted ``len(data)``.

    Returns:
        The cleaned image with its size and SHA-256.

    Raises:
        InvalidImage: The data is empty, too large, not PNG/JPEG/WEBP, has too many pixels, or is
            truncated or corrupt.
    """
    if not data:
        raise InvalidImage("The image is empty.")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is too large ({len(data) / 2**20:.1f} MiB; the limit is "
            f"{max_bytes / 2**20:.1f} MiB)."
        )
    fmt = _verify(data, max_pixels)
    image = _decode(data)

    orientation = _orientation(image)
    # Either way a plain in-memory image: the decoder object would keep the source bytes (and
    # their metadata) alive for as long as the CleanImage holds on to its pixels.
    image = image.transpose(_ORIENTATION_FIX[orientation]) if orientation != 1 else image.copy()
    if fmt == "PNG" and orientation == 1:
        encoded = _strip_png(data)
    else:
        icc = image.info.get("icc_profile") or None
        image, icc = _output_mode(image, fmt, icc)
        image.info = {}  # Savers read some metadata (JPEG comments, transparency) from info.
        encoded = _encode(image, fmt, icc)

    return CleanImage(
        data=encoded,
        mime=_MIME[fmt],
        ext=_EXT[fmt],
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(encoded).hexdigest(),
        _pixels=image if image.width * image.height <= _KEEP_PIXELS_MAX else None,
    )


def thumbnail(image: CleanImage, *, size: int = 256) -> bytes:
    """Make a WEBP preview (quality 80) that fits in ``size`` x ``size`` pixels.

    The aspect ratio is kept and small images are not enlarged.

    Args:
        image: A cleaned image.
        size: Bounding box side in pixels (at least 1).

    Returns:
        WEBP bytes.

    Raises:
        ValueError: ``size`` is below 1.
    """
    if size < 1:
        raise ValueError("thumbnail size must be at least 1")
    im = _decode_fitted(image, size, enlarge=False)
    out = io.BytesIO()
    im.save(out, "WEBP", quality=80)
    return out.getvalue()


def grid(images: Sequence[CleanImage], *, cell: int = 512) -> bytes:
    """Lay out up to four images in a 2x2 grid and encode it as JPEG (quality 90).

    Each image is scaled (up or down) to fit its cell, keeping its aspect ratio, and centred.
    Cells are separated by a gap of ``max(2, cell // 64)`` pixels; unused cells and the gap are
    dark gray. The result is ``2 * cell + gap`` pixels square; image ``i`` goes to cell ``i`` in
    reading order.

    Args:
        images: One to four cleaned images.
        cell: Cell side in pixels (at least 1).

    Returns:
        JPEG bytes.

    Raises:
        ValueError: No images, more than four, or ``cell`` below 1.
    """
    if not 1 <= len(images) <= 4:
        raise ValueError("grid takes 1 to 4 images")
    if cell < 1:
        raise ValueError("grid cell must be at least 1 pixel")
    gap = max(2, cell // 64)
    side = 2 * cell + gap
    canvas = Image.new("RGB", (side, side), _GRID_BACKGROUND)
    for index, item in enumerate(images):
        fitted = _decode_fitted(item, cell, enlarge=True)
        left = (index % 2) * (cell + gap) + (cell - fitted.width) // 2
        top = (index // 2) * (cell + gap) + (cell - fitted.height) // 2
        canvas.paste(fitted, (left, top), fitted if fitted.mode == "RGBA" else None)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()


def preview_within(data: bytes, max_bytes: int) -> bytes:
    """A JPEG of a stored image, scaled down until it is at most ``max_bytes`` long.

    For chat platforms' upload limits (Discord: 10 MiB per file by default; Telegram photos:
    10 MB); the full file stays in the store. Each step scales the sides by 0.7 (about half the
    pixels) at quality 85, so a few steps reach any sensible limit.

    Args:
        data: An image the store holds (already validated).
        max_bytes: Largest acceptable result, at least 1 KiB.

    Returns:
        JPEG bytes no longer than ``max_bytes``.

    Raises:
        ValueError: ``max_bytes`` is below 1 KiB, or even a 64-pixel version does not fit.
        InvalidImage: ``data`` is not a decodable image.
    """
    if max_bytes < 1024:
        raise ValueError("max_bytes must be at least 1 KiB")
    im = _displayable(_decode(data))
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    while True:
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        if out.tell() <= max_bytes:
            return out.getvalue()
        if max(im.size) <= 64:
            raise ValueError(f"no preview fits in {max_bytes} bytes")
        im = im.resize((max(1, round(im.width * 0.7)), max(1, round(im.height * 0.7))), Image.LANCZOS)


def _open(data: bytes) -> Image.Image:
    """Read an image header, refusing unknown formats and Pillow's decompression-bomb sizes."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning is no refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("The image has too many pixels.") from exc
    except Image.UnidentifiedImageError as exc:
        raise InvalidImage("Only PNG, JPEG and WEBP images are accepted.") from exc
    except Exception as exc:  # Pillow raises a zoo of types (SyntaxError, struct.error...)
        raise InvalidImage("The image file is corrupt.") from exc


def _verify(data: bytes, max_pixels: int) -> str:
    """Check format, pixel count and structure (PNG chunk CRCs); return PNG, JPEG or WEBP."""
    probe = _open(data)
    fmt = _FORMAT_ALIASES.get(probe.format or "", probe.format or "")
    if fmt not in _FORMATS:  # pragma: no cover - Image.open was restricted to these formats
        raise InvalidImage("Only PNG, JPEG and WEBP images are accepted.")
    width, height = probe.size
    if width * height > max_pixels:
        raise InvalidImage(
            f"The image has too many pixels ({width}x{height}; the limit is "
            f"{max_pixels:,} pixels)."
        )
    try:
        probe.verify()
    except Exception as exc:
        raise InvalidImage("The image file is corrupt.") from exc
    return fmt


def _decode(data: bytes) -> Image.Image:
    """Decode every pixel: the only proof the data is a whole, readable image."""
    image = _open(data)  # verify() leaves its image unusable, so start again
    try:
        image.load()
    except Exception as exc:
        raise InvalidImage("The image file is truncated or corrupt.") from exc
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 to 8; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # A mangled EXIF block is metadata we drop anyway; keep the pixels as stored.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _strip_png(data: bytes) -> bytes:
    """Rebuild a verified PNG from the chunks in ``_PNG_KEEP``, dropping anything after IEND."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length  # length, type, body, CRC
        if end > len(data):
            break
        if kind in _PNG_KEEP:
            parts.append(view[pos:end])
        if kind == b"IEND":
            return b"".join(parts)
        pos = end
    # Pillow decoded it, so this means a missing IEND or a chunk running past the end.
    raise InvalidImage("The image file is truncated or corrupt.")


def _output_mode(
    image: Image.Image, fmt: str, icc: bytes | None
) -> tuple[Image.Image, bytes | None]:
    """Convert to a mode the format's encoder writes faithfully; drop ICC if the model changes."""
    has_alpha = image.has_transparency_data
    if fmt == "PNG":
        # Palette transparency lives in info, which gets wiped, so carry it into an alpha channel.
        if image.mode not in _PNG_MODES or (image.mode == "P" and has_alpha):
            image = image.convert("RGBA" if has_alpha else "RGB")
    elif fmt == "JPEG":
        if image.mode not in ("L", "RGB"):
            if image.mode == "CMYK":
                icc = None
            image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    return image, icc


def _encode(image: Image.Image, fmt: str, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    try:
        if fmt == "PNG":
            image.save(out, "PNG", optimize=False, **options)
        elif fmt == "JPEG":
            image.save(out, "JPEG", quality=95, **options)
        else:
            image.save(out, "WEBP", lossless=False, quality=95, method=2, **options)
    except Exception as exc:
        raise InvalidImage("The image could not be re-encoded.") from exc
    return out.getvalue()


def _decode_fitted(image: CleanImage, box: int, *, enlarge: bool) -> Image.Image:
    """The image as RGB or RGBA, scaled to fit a ``box`` square keeping its aspect ratio.

    Args:
        image: The cleaned image; its cached pixels are used when present.
        box: Side of the square to fit in, in pixels.
        enlarge: Whether images smaller than the box are scaled up.
    """
    im = image._pixels
    if im is None:
        im = Image.open(io.BytesIO(image.data))
    scale = min(box / im.width, box / im.height)
    if not enlarge:
        scale = min(scale, 1.0)
    target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    if image._pixels is None and im.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (never below target): far less work.
        im.draft("RGB", target)
    im = _displayable(im)
    if im.size != target:
        # reducing_gap makes resize() box-reduce by an integer factor first, then filter cheaply.
        im = im.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im


def _displayable(im: Image.Image) -> Image.Image:
    """Convert to 8-bit RGB or RGBA, so resizing filters properly and encoders accept it."""
    if im.mode in ("I", "I;16"):
        # A plain convert() would clip 16-bit samples to white; rescale them to 8 bits instead.
        im = im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    return im.convert("RGBA" if im.has_transparency_data else "RGB")
