"""A provider that draws stand-in pictures locally, for development, demos and tests.

It makes no network calls. Each image is an abstract composition (palette, gradient, shapes and
lines) derived from a hash of the prompt and seed, so the same request with the same seed always
gives the same bytes, and different prompts or seeds give visibly different pictures. A request
without a seed gets a fresh random one, as real providers do, so a re-roll is a new picture. The prompt is written in a caption
band together with the words "offline stand-in", so nobody mistakes it for a real AI image.

Upscales redraw the same composition (same seed) at twice the size, as a real upscaler keeps the
picture and adds pixels; variations are new compositions from seeds derived from the source's.

With ``delay > 0`` it behaves like an asynchronous vendor: ``submit`` answers a task id and
``poll`` reports progress until ``delay`` seconds have passed. The task id carries the whole
request and the submit time, so a task survives a process restart without any stored state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import colorsys
import hashlib
import io
import json
import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFont

from studiobot.providers.base import (
    ASPECT_RATIOS,
    Capabilities,
    Finished,
    GeneratedImage,
    ImageRequest,
    Progress,
    ProviderKey,
    Submitted,
)
from studiobot.providers.errors import BadRequest

__all__ = ["OfflineProvider", "image_size", "render_sketch"]

MODEL = "offline-sketch"
MAX_IMAGES = 4
_TASK_PREFIX = "off1."
# A task id is only ever as long as the request it encodes; anything far larger is not ours.
_MAX_TASK_ID_CHARS = 64 * 1024
_Color = tuple[int, int, int]


class OfflineProvider:
    """The ``offline`` provider: deterministic Pillow drawings, no network, no key needed.

    Args:
        delay: Seconds an asynchronous task takes; 0 makes the provider synchronous.
        credits_per_image: Platform credits charged per image.
        base_size: Long side of every image in pixels (see :func:`image_size`).
        clock: Wall-clock source in seconds; injected by tests. It must be comparable across
            processes (the default ``time.time`` is) because task ids store submit times.

    Raises:
        ValueError: A negative delay or price, or a base size below 64 pixels.
    """

    name = "offline"

    def __init__(
        self,
        *,
        delay: float = 0.0,
        credits_per_image: int = 1,
        base_size: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not delay >= 0:  # also refuses NaN
            raise ValueError("delay must be >= 0")
        if credits_per_image < 0:
            raise ValueError("credits_per_image must be >= 0")
        if base_size < 64:
            raise ValueError("base_size must be at least 64 pixels")
        self._delay = float(delay)
        self._credits_per_image = credits_per_image
        self._base_size = base_size
        self._clock = clock
        self.capabilities = Capabilities(
            models=(MODEL,),
            aspects=ASPECT_RATIOS,
            max_images=MAX_IMAGES,
            is_async=self._delay > 0,
            can_cancel=self._delay > 0,
            negative_prompt=True,
            seed=True,
            webhooks=False,
            upscale=True,
            variations=True,
            needs_key=False,
        )

    def price(self, request: ImageRequest) -> int:
        """Return ``credits_per_image * request.count``."""
        return self._credits_per_image * request.count

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Finished | Submitted:
        """Draw the images now (sync mode) or hand back a self-contained task id (async mode).

        Raises:
            BadRequest: Unknown model or aspect, or a count outside 1-4.
        """
        task = _Task.from_request(request, submitted_at=self._clock())
        if self.capabilities.is_async:
            return Submitted(task_id=task.encode())
        return await self._finish(task)

    async def poll(self, task_id: str, key: ProviderKey | None) -> Progress | Finished:
        """Report ``Progress(stage="drawing")`` until ``delay`` has passed since submit, then draw.

        Raises:
            BadRequest: ``task_id`` was not made by this provider or is damaged.
        """
        task = _Task.decode(task_id)
        elapsed = self._clock() - task.submitted_at
        if self._delay > 0 and elapsed < self._delay:
            return Progress(fraction=min(max(elapsed / self._delay, 0.0), 1.0), stage="drawing")
        return await self._finish(task)

    async def cancel(self, task_id: str, key: ProviderKey | None) -> bool:
        """Accept cancellation in async mode (there is nothing to stop); False in sync mode.

        Raises:
            BadRequest: ``task_id`` was not made by this provider or is damaged.
        """
        _Task.decode(task_id)
        return self.capabilities.can_cancel

    async def check_key(self, key: ProviderKey) -> None:
        """Accept any key: the offline provider has no account."""

    async def aclose(self) -> None:
        """Nothing to release: the offline provider holds no connections."""

    async def _finish(self, task: _Task) -> Finished:
        size = image_size(task.aspect, self._base_size * task.scale)
        # Drawing and PNG encoding take milliseconds of CPU per image; keep the event loop free.
        pngs = await asyncio.to_thread(
            lambda: [
                render_sketch(task.prompt, task.negative_prompt, task.seed + i, task.aspect, size)
                for i in range(task.count)
            ]
        )
        return Finished(
            images=tuple(
                GeneratedImage(data=png, seed=task.seed + i, nsfw=False)
                for i, png in enumerate(pngs)
            )
        )


@dataclass(frozen=True, slots=True)
class _Task:
    """Everything needed to produce a result: the request with its seed resolved, and the time."""

    prompt: str
    negative_prompt: str | None
    seed: int
    aspect: str
    count: int
    submitted_at: float
    scale: int = 1

    @classmethod
    def from_request(cls, request: ImageRequest, *, submitted_at: float) -> _Task:
        if request.model not in ("", MODEL):
            raise BadRequest(f"unknown offline model {request.model[:40]!r}")
        seed = request.seed if request.seed is not None else _fresh_seed()
        count, scale = request.count, 1
        if request.operation != "generate":
            if request.source is None or request.source.seed is None:
                raise BadRequest(f"an offline {request.operation} needs the source image's seed")
            if request.operation == "upscale":
                seed, count, scale = request.source.seed, 1, 2
            else:
                seed = _derived_seed(request.source.seed, request.seed or 0)
        task = cls(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=seed,
            aspect=request.aspect,
            count=count,
            submitted_at=float(submitted_at),
            scale=scale,
        )
        task._validate()
        return task

    def encode(self) -> str:
        body = {
            "p": self.prompt,
            "n": self.negative_prompt,
            "s": self.seed,
            "a": self.aspect,
            "c": self.count,
            "t": self.submitted_at,
            "z": self.scale,
        }
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return _TASK_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, task_id: str) -> _Task:
        if (
            not isinstance(task_id, str)
            or not task_id.startswith(_TASK_PREFIX)
            or len(task_id) > _MAX_TASK_ID_CHARS
        ):
            raise BadRequest("not an offline task id")
        payload = task_id[len(_TASK_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            body = json.loads(raw)
            task = cls(
                prompt=body["p"],
                negative_prompt=body["n"],
                seed=body["s"],
                aspect=body["a"],
                count=body["c"],
                submitted_at=float(body["t"]),
                scale=body.get("z", 1),  # task ids from before upscales existed have no scale
            )
        except (binascii.Error, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise BadRequest("malformed offline task id") from exc
        if (
            not isinstance(task.prompt, str)
            or not isinstance(task.negative_prompt, str | None)
            or not isinstance(task.seed, int)
            or isinstance(task.seed, bool)
            or not isinstance(task.aspect, str)
            or not isinstance(task.count, int)
            or not math.isfinite(task.submitted_at)
            or task.scale not in (1, 2)
        ):
            raise BadRequest("malformed offline task id")
        task._validate()
        return task

    def _validate(self) -> None:
        if self.aspect not in ASPECT_RATIOS:
            raise BadRequest(f"unsupported aspect ratio {self.aspect[:20]!r}")
        if not 1 <= self.count <= MAX_IMAGES:
            raise BadRequest(f"count must be 1-{MAX_IMAGES}, got {self.count}")


def _derived_seed(source_seed: int, salt: int) -> int:
    """A seed near-unrelated to ``source_seed`` but fixed by it (variation takes are repeatable)."""
    digest = hashlib.sha256(f"{source_seed}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def _fresh_seed() -> int:
    """A random 31-bit seed for a request that named none; it is reported, so ``--seed`` repeats it."""
    return secrets.randbelow(2**31)


def image_size(aspect: str, base_size: int) -> tuple[int, int]:
    """Width and height for ``aspect`` with the long side at most ``base_size``.

    The ratio is kept exactly, so the long side is the largest multiple of the ratio's larger
    term that fits: ``("16:9", 512)`` gives ``(512, 288)``, ``("3:2", 512)`` gives ``(510, 340)``.

    Raises:
        ValueError: ``aspect`` is not ``"W:H"`` with positive integers, or too wide for the size.
    """
    try:
        w_term, h_term = (int(part) for part in aspect.split(":"))
    except ValueError:
        raise ValueError(f"bad aspect ratio {aspect!r}") from None
    if w_term <= 0 or h_term <= 0:
        raise ValueError(f"bad aspect ratio {aspect!r}")
    unit = base_size // max(w_term, h_term)
    if unit < 1:
        raise ValueError(f"aspect ratio {aspect!r} does not fit in {base_size} pixels")
    return w_term * unit, h_term * unit


def render_sketch(
    prompt: str, negative_prompt: str | None, seed: int, aspect: str, size: tuple[int, int]
) -> bytes:
    """Draw the stand-in picture for one image and return it as PNG bytes.

    The composition depends only on the arguments (not on ``size``, beyond scaling), and the same
    arguments give identical bytes with the same Pillow build.

    Args:
        prompt: Shown in the caption band and hashed into the composition.
        negative_prompt: Hashed into the composition (not drawn).
        seed: Hashed into the composition; the provider passes ``seed + image index``.
        aspect: Hashed into the composition.
        size: ``(width, height)`` in pixels.
    """
    digest = hashlib.sha256(
        json.dumps([prompt, negative_prompt, seed, aspect], ensure_ascii=False).encode()
    ).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    palette = _palette(rng)
    image = _background(rng, palette, size)
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA draw on an RGB image blends translucent fills
    rng.choice(_LAYOUTS)(draw, rng, palette, size)
    _scribbles(draw, rng, palette, size)
    _caption(draw, prompt, seed, size)
    out = io.BytesIO()
    # Low compression: these files are throwaway stand-ins and drawing speed matters more.
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _palette(rng: random.Random) -> list[_Color]:
    """Five colours built around a random hue with a random harmony scheme."""
    base = rng.random()
    offsets = rng.choice(
        [
            (0.0, 0.05, -0.05, 0.1, -0.1),  # analogous
            (0.0, 0.5, 0.0, 0.5, 0.08),  # complementary
            (0.0, 1 / 3, 2 / 3, 0.0, 1 / 3),  # triadic
            (0.0, 0.42, 0.58, 0.0, 0.5),  # split complementary
        ]
    )
    colours = []
    for offset in offsets:
        hue = (base + offset + rng.uniform(-0.02, 0.02)) % 1.0
        sat = rng.uniform(0.45, 0.95)
        val = rng.uniform(0.35, 1.0)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    rng.shuffle(colours)
    return colours


def _background(rng: random.Random, palette: list[_Color], size: tuple[int, int]) -> Image.Image:
    """A two-colour gradient (vertical, horizontal, diagonal or radial) filling ``size``."""
    kind = rng.choice(("vertical", "horizontal", "diagonal", "radial"))
    vertical = Image.linear_gradient("L")
    if kind == "vertical":
        mask = vertical
    elif kind == "horizontal":
        mask = vertical.transpose(Image.Transpose.ROTATE_90)
    elif kind == "diagonal":
        mask = ImageChops.add(vertical, vertical.transpose(Image.Transpose.ROTATE_90), scale=2.0)
    else:
        mask = Image.radial_gradient("L")
    if rng.random() < 0.5:
        mask = ImageChops.invert(mask)
    mask = mask.resize(size, Image.Resampling.BILINEAR)
    first, second = rng.sample(palette, 2)
    return Image.composite(Image.new("RGB", size, first), Image.new("RGB", size, second), mask)


def _rgba(colour: _Color, alpha: int) -> tuple[int, int, int, int]:
    return (*colour, alpha)


def _orbs(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """Translucent circles, some outlined."""
    w, h = size
    unit = min(w, h)
    for _ in range(rng.randint(5, 12)):
        r = rng.uniform(0.06, 0.35) * unit
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        outline = _rgba(rng.choice(palette), 230) if rng.random() < 0.4 else None
        draw.ellipse(
            (x - r, y - r, x + r, y + r),
            fill=_rgba(rng.choice(palette), rng.randint(90, 220)),
            outline=outline,
            width=max(1, round(unit / 120)),
        )


def _stripes(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """Parallel bands across the picture at a random angle."""
    w, h = size
    span = math.hypot(w, h)
    angle = rng.uniform(0, math.pi)
    dx, dy = math.cos(angle), math.sin(angle)  # along the stripe
    nx, ny = -dy, dx  # across the stripe
    cx, cy = w / 2, h / 2
    count = rng.randint(5, 14)
    for i in range(count):
        offset = (i / count - 0.5) * span + rng.uniform(-0.03, 0.03) * span
        half = rng.uniform(0.01, 0.06) * span
        corners = [
            (cx + dx * along + nx * across, cy + dy * along + ny * across)
            for along, across in (
                (-span, offset - half),
                (span, offset - half),
                (span, offset + half),
                (-span, offset + half),
            )
        ]
        draw.polygon(corners, fill=_rgba(rng.choice(palette), rng.randint(110, 230)))


def _mountains(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """A sun behind layered ridges, back to front."""
    w, h = size
    sun_r = rng.uniform(0.08, 0.18) * min(w, h)
    sx, sy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.1, 0.4) * h
    draw.ellipse((sx - sun_r, sy - sun_r, sx + sun_r, sy + sun_r), fill=_rgba(palette[0], 235))
    layers = rng.randint(3, 6)
    for layer in range(layers):
        base = h * (0.45 + 0.45 * layer / layers)
        points = [(0.0, float(h))]
        steps = rng.randint(4, 9)
        for step in range(steps + 1):
            points.append((w * step / steps, base - rng.uniform(0.05, 0.3) * h))
        points.append((float(w), float(h)))
        draw.polygon(points, fill=_rgba(palette[1 + layer % 4], rng.randint(170, 250)))


def _tiles(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """A grid of rounded tiles with some left out."""
    w, h = size
    cols, rows = rng.randint(3, 7), rng.randint(2, 6)
    pad = min(w, h) * rng.uniform(0.005, 0.03)
    radius = round(min(w / cols, h / rows) * rng.uniform(0.0, 0.3))
    for row in range(rows):
        for col in range(cols):
            if rng.random() < 0.25:
                continue
            box = (
                col * w / cols + pad,
                row * h / rows + pad,
                (col + 1) * w / cols - pad,
                (row + 1) * h / rows - pad,
            )
            fill = _rgba(rng.choice(palette), rng.randint(120, 240))
            draw.rounded_rectangle(box, radius=radius, fill=fill)


def _rays(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """Wedges fanning out from a random point."""
    w, h = size
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    reach = 2 * math.hypot(w, h)
    count = rng.randint(6, 16)
    start = rng.uniform(0, 2 * math.pi)
    for i in range(count):
        a0 = start + 2 * math.pi * i / count
        a1 = a0 + rng.uniform(0.3, 0.9) * 2 * math.pi / count
        draw.polygon(
            [
                (cx, cy),
                (cx + reach * math.cos(a0), cy + reach * math.sin(a0)),
                (cx + reach * math.cos(a1), cy + reach * math.sin(a1)),
            ],
            fill=_rgba(rng.choice(palette), rng.randint(100, 220)),
        )


_LAYOUTS = (_orbs, _stripes, _mountains, _tiles, _rays)


def _scribbles(
    draw: ImageDraw.ImageDraw, rng: random.Random, palette: list[_Color], size: tuple[int, int]
) -> None:
    """A few lines and arcs over the layout, so even similar layouts differ in detail."""
    w, h = size
    unit = min(w, h)
    for _ in range(rng.randint(3, 8)):
        colour = _rgba(rng.choice(palette), rng.randint(150, 255))
        width = max(1, round(unit * rng.uniform(0.004, 0.02)))
        if rng.random() < 0.5:
            points = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(rng.randint(2, 5))]
            draw.line(points, fill=colour, width=width, joint="curve")
        else:
            r = rng.uniform(0.1, 0.5) * unit
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            start = rng.uniform(0, 360)
            end = start + rng.uniform(60, 300)
            draw.arc((x - r, y - r, x + r, y + r), start, end, fill=colour, width=width)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font needs no system fonts, so output is identical on every machine.
    # Loading costs ~0.2 ms; not cached, because drawing threads must not share a FreeType face.
    return ImageFont.load_default(size=size)


def _caption(draw: ImageDraw.ImageDraw, prompt: str, seed: int, size: tuple[int, int]) -> None:
    """The caption band: the prompt, then a plain statement that this is no AI image."""
    w, h = size
    long_side = max(w, h)
    margin = max(4, round(long_side / 64))
    text_font = _font(max(10, round(long_side / 30)))
    note_font = _font(max(9, round(long_side / 38)))
    text_width = w - 2 * margin
    prompt_lines = _wrap(" ".join(prompt.split()) or "(empty prompt)", text_font, text_width, 2)
    note_lines = _wrap("offline stand-in - not a real AI image", note_font, text_width, 2)
    # Without FreeType, Pillow falls back to a fixed bitmap font that has no size attribute.
    text_line = round(getattr(text_font, "size", 10) * 1.25)
    note_line = round(getattr(note_font, "size", 10) * 1.25)
    band = margin * 2 + text_line * len(prompt_lines) + note_line * len(note_lines)
    draw.rectangle((0, h - band, w, h), fill=(12, 12, 16, 200))
    y = h - band + margin
    for line in prompt_lines:
        draw.text((margin, y), line, font=text_font, fill=(245, 245, 245, 255))
        y += text_line
    for line in note_lines:
        draw.text((margin, y), line, font=note_font, fill=(255, 210, 70, 255))
        y += note_line
    _badge(draw, f"OFFLINE STAND-IN  seed {seed}", note_font, margin, w)


def _badge(draw: ImageDraw.ImageDraw, text: str, font, margin: int, width: int) -> None:
    """A dark label in the top-left corner, so even a cropped preview says what this is."""
    text = _wrap(text, font, width - 4 * margin, 1)[0]
    left, top, right, bottom = draw.textbbox((2 * margin, 2 * margin), text, font=font)
    pad = max(2, margin // 2)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(12, 12, 16, 200))
    draw.text((2 * margin, 2 * margin), text, font=font, fill=(255, 210, 70, 255))


def _wrap(text: str, font, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; cut words that are too long; "..." on overflow."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if len(lines) > max_lines:
            break  # enough to know it overflows; keeps very long prompts cheap
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while len(lines) <= max_lines and len(current) > 1 and font.getlength(current) > width:
            cut = _fit_chars(current, font, width)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + "..."]
    return lines or [""]


def _fit_chars(text: str, font, width: float) -> int:
    """How many leading characters of ``text`` fit in ``width`` pixels (at least one)."""
    fit = 1
    while fit < len(text) and font.getlength(text[: fit + 1]) <= width:
        fit += 1
    return fit
