"""The ``Provider`` protocol and the value types that cross it (DESIGN.md section 6).

A provider turns an :class:`ImageRequest` into images. Synchronous vendors answer ``submit`` with
:class:`Finished`; asynchronous ones answer :class:`Submitted` with a task id and are then polled
until ``poll`` answers :class:`Finished`. Failures are raised as the classes in
:mod:`studiobot.providers.errors`. Providers never touch the database or the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from studiobot.providers.errors import BadRequest, WebhookRejected

#: Aspect ratios the commands accept, in the order they are offered to users.
ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")

Operation = Literal["generate", "upscale", "variation"]


@dataclass(frozen=True, slots=True)
class SourceImage:
    """The earlier result an upscale or a variation starts from.

    Vendors differ in what they need: Midjourney-style APIs take their own task id and the image's
    position, others take the seed or the picture itself, so all three are carried.

    Attributes:
        task_id: The provider's task id of the job that made the image, when it had one.
        index: The image's position in that job, 1-4.
        seed: The image's seed, when known.
        storage_key: The stored file (``LocalStore`` key), for providers that upload the picture.
    """

    task_id: str | None
    index: int
    seed: int | None = None
    storage_key: str | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image request (text to image, upscale or variation), already validated against the provider's capabilities.

    Attributes:
        prompt: What to draw (non-empty, within the configured length limit).
        aspect: One of :data:`ASPECT_RATIOS` that the provider supports.
        count: Number of images, 1 to ``Capabilities.max_images``.
        model: Model name from ``Capabilities.models``.
        negative_prompt: What to avoid, or None.
        seed: Seed for reproducible output, or None for the provider's choice.
        webhook_url: Where an asynchronous provider may report completion, or None to rely on polls.
        operation: ``generate`` (text to image), ``upscale`` (one larger image of ``source``) or
            ``variation`` (``count`` new takes on ``source``).
        source: The image an upscale or variation starts from; None for ``generate``.
    """

    prompt: str
    aspect: str = "1:1"
    count: int = 1
    model: str = ""
    negative_prompt: str | None = None
    seed: int | None = None
    webhook_url: str | None = None
    operation: Operation = "generate"
    source: SourceImage | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do; the router and the command parameters are built from it.

    Attributes:
        models: Model names, the first being the default.
        aspects: Supported aspect ratios (subset of :data:`ASPECT_RATIOS`).
        max_images: Largest ``count`` accepted in one request.
        is_async: True when ``submit`` returns :class:`Submitted` and results come from ``poll``.
        can_cancel: True when ``cancel`` can stop a submitted task.
        negative_prompt: True when the provider honours ``negative_prompt``.
        seed: True when the provider honours ``seed``.
        webhooks: True when the provider can call ``webhook_url`` on completion.
        model_aspects: Per-model aspect ratios where a model supports fewer than ``aspects``.
        model_max_images: Per-model image limits where a model allows fewer than ``max_images``.
        upscale: True when the provider can make a larger version of one of its results.
        variations: True when the provider can make variations of one of its results.
        needs_key: False for providers that call no vendor (``offline``); every other provider
            needs the platform's key or the user's own.
    """

    models: tuple[str, ...]
    aspects: tuple[str, ...] = ASPECT_RATIOS
    max_images: int = 4
    is_async: bool = False
    can_cancel: bool = False
    negative_prompt: bool = True
    seed: bool = True
    webhooks: bool = False
    model_aspects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model_max_images: Mapping[str, int] = field(default_factory=dict)
    upscale: bool = False
    variations: bool = False
    needs_key: bool = True

    def supports(self, operation: Operation) -> bool:
        """Whether the provider can perform ``operation``."""
        return {"generate": True, "upscale": self.upscale, "variation": self.variations}[operation]

    def accepts(self, request: ImageRequest, model: str) -> bool:
        """Whether ``model`` can take ``request`` as it is (aspect, count, options, operation)."""
        return (
            model in self.models
            and self.supports(request.operation)
            and request.aspect in self.aspects_for(model)
            and request.count <= self.max_images_for(model)
            and (request.negative_prompt is None or self.negative_prompt)
            and (request.seed is None or self.seed)
        )

    def aspects_for(self, model: str) -> tuple[str, ...]:
        """Aspect ratios ``model`` supports."""
        return tuple(self.model_aspects.get(model, self.aspects))

    def max_images_for(self, model: str) -> int:
        """Most images ``model`` makes in one request."""
        return self.model_max_images.get(model, self.max_images)

    @property
    def default_model(self) -> str:
        """The model used when the user names none."""
        return self.models[0]


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image a provider produced: inline bytes, or a URL the finisher downloads promptly.

    Exactly one of ``data`` and ``url`` is set. ``nsfw`` carries the provider's own safety flag when
    it gives one (None when it says nothing).
    """

    data: bytes | None = None
    url: str | None = None
    seed: int | None = None
    nsfw: bool | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("GeneratedImage needs exactly one of data or url")


@dataclass(frozen=True, slots=True)
class Finished:
    """The task is done and produced ``images`` (at least one)."""

    images: tuple[GeneratedImage, ...]
    revised_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    """An asynchronous provider accepted the request; poll ``task_id`` for the outcome."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Progress:
    """An asynchronous task is still going.

    Attributes:
        fraction: Completed share 0.0-1.0 when the provider reports one, else None.
        queue_position: Place in the provider's queue when it reports one, else None.
        stage: Short provider status word (e.g. ``starting``, ``processing``).
    """

    fraction: float | None = None
    queue_position: int | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """A decrypted API key held only in memory for one call. ``repr`` never shows the secret."""

    secret: str = field(repr=False)
    source: str = "platform"  # "platform" or "user"

    def __str__(self) -> str:  # pragma: no cover - defensive: keys must never be formatted
        return "ProviderKey(***)"


@runtime_checkable
class Provider(Protocol):
    """An image provider adapter (DESIGN.md section 6).

    Implementations hold one ``httpx.AsyncClient`` with explicit timeouts (none for ``offline``) and
    raise only :class:`~studiobot.providers.errors.ProviderError` subclasses from their methods.
    """

    name: str
    capabilities: Capabilities

    def price(self, request: ImageRequest) -> int:
        """Platform credits this request costs (before any user-key discount)."""
        ...

    async def submit(self, request: ImageRequest, key: ProviderKey | None) -> Finished | Submitted:
        """Start generating. Sync providers return :class:`Finished`, async ones :class:`Submitted`."""
        ...

    async def poll(self, task_id: str, key: ProviderKey | None) -> Progress | Finished:
        """Report on a task returned by ``submit``. Raises ProviderError when the task failed."""
        ...

    async def cancel(self, task_id: str, key: ProviderKey | None) -> bool:
        """Ask the provider to stop a task; True when it accepted, False when it cannot."""
        ...

    async def check_key(self, key: ProviderKey) -> None:
        """Make one cheap authenticated call; raise AuthError when the key is refused."""
        ...

    async def aclose(self) -> None:
        """Release network resources (the HTTP client)."""
        ...


class Synchronous:
    """Mixin for providers whose ``submit`` always answers :class:`Finished`: there is no task to
    poll or cancel. The class using it sets ``name``."""

    name: str

    async def poll(self, task_id: str, key: ProviderKey | None) -> Progress | Finished:
        """Not applicable: generation is synchronous.

        Raises:
            BadRequest: Always.
        """
        raise BadRequest(f"{self.name} has no tasks to poll; submit answers Finished")

    async def cancel(self, task_id: str, key: ProviderKey | None) -> bool:
        """Not applicable (synchronous); always False."""
        return False


@runtime_checkable
class WebhookProvider(Provider, Protocol):
    """A provider that can report a finished task by calling studiobot (``capabilities.webhooks``).

    The web layer finds the job from the URL it gave the provider (``/webhooks/<provider>/<job id>/
    <token>``, the token unguessable and per job) and hands the raw delivery here; polling stays the
    safety net, so a rejected or lost delivery only costs time.
    """

    async def read_webhook(
        self, body: bytes, headers: Mapping[str, str], task_id: str, key: ProviderKey | None
    ) -> Progress | Finished:
        """Authenticate and read one webhook delivery about ``task_id``.

        Args:
            body: The raw request body, exactly as received (signatures cover these bytes).
            headers: The request headers (case-insensitive mapping).
            task_id: The task id ``submit`` returned for the job the URL names.
            key: The key the job was submitted with (some vendors sign per account).

        Returns:
            Progress while the task is still going, Finished when it produced images.

        Raises:
            WebhookRejected: Bad or missing signature, malformed body, a body about another task,
                or the vendor would not give the signing secret to check it with.
            RateLimited, Unavailable: The delivery could not be checked yet (retryable; they say
                nothing about the task, so the job goes back to polling).
            ProviderError: Any other subclass: the delivery says the task ended without images.
        """
        ...


def read_json_object(body: bytes) -> dict[str, Any]:
    """Decode a webhook body that must be a JSON object.

    Raises:
        WebhookRejected: The body is not UTF-8 JSON or not an object.
    """
    try:
        value = json.loads(body)
    except ValueError:
        raise WebhookRejected("body is not JSON") from None
    if not isinstance(value, dict):
        raise WebhookRejected("body is not a JSON object")
    return value
