"""Choosing a provider and a model, whose key the platform pays with, and where to fail over.

The router knows every provider the composition root built and the operator's keys. Whether the
user's own key pays is decided with the user's stored keys (``commands.queueing``), since that
needs the database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from studiobot.errors import BadInput
from studiobot.providers.base import ImageRequest, Provider, ProviderKey


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the provider and the model."""

    provider: Provider
    model: str


class Router:
    """Provider registry, platform keys and fallbacks.

    Args:
        providers: Providers by name, in the order they are offered to users.
        default: Name of the provider used when the user names none.
        platform_keys: The operator's keys by provider name (providers needing none are absent).
        fallbacks: Per provider, the providers to move a platform-paid job to when its
            submissions keep failing retryably (DESIGN.md section 6), in order.

    Raises:
        ValueError: ``default`` or a fallback names a provider that is not configured.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        default: str,
        platform_keys: Mapping[str, str] | None = None,
        fallbacks: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        if default not in providers:
            raise ValueError(f"default provider {default!r} is not configured")
        self._providers = dict(providers)
        self._default = default
        self._platform_keys = dict(platform_keys or {})
        self._fallbacks = {name: tuple(chain) for name, chain in (fallbacks or {}).items()}
        unknown = {n for name, chain in self._fallbacks.items() for n in (name, *chain)} - set(providers)
        if unknown:
            raise ValueError(f"fallbacks name providers that are not configured: {', '.join(sorted(unknown))}")

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the configured providers."""
        return tuple(self._providers)

    @property
    def keyed_names(self) -> tuple[str, ...]:
        """Providers a user can add their own key for (all but keyless ones such as ``offline``)."""
        return tuple(n for n, p in self._providers.items() if p.capabilities.needs_key)

    def provider(self, name: str) -> Provider:
        """The provider called ``name``.

        Raises:
            BadInput: When no such provider is configured (the message lists those that are).
        """
        try:
            return self._providers[name]
        except KeyError:
            raise BadInput(
                f"Unknown provider '{name}'. Available here: {', '.join(self._providers)}."
            ) from None

    def route(self, provider_name: str | None, model: str | None) -> Route:
        """Pick provider and model for a request.

        Raises:
            BadInput: Unknown provider, or a model the provider does not offer.
        """
        provider = self.provider((provider_name or self._default).strip().lower())
        models = provider.capabilities.models
        if model is None:
            chosen = provider.capabilities.default_model
        elif model in models:
            chosen = model
        else:
            raise BadInput(
                f"{provider.name} has no model '{model}'. Choose one of: {', '.join(models)}."
            )
        return Route(provider=provider, model=chosen)

    def platform_pays(self, provider_name: str) -> bool:
        """Whether jobs for ``provider_name`` can run on the platform's account (a key is set, or
        the provider needs none)."""
        provider = self._providers[provider_name]
        return not provider.capabilities.needs_key or provider_name in self._platform_keys

    def platform_key(self, provider_name: str) -> ProviderKey | None:
        """The operator's key for ``provider_name``, or None when none is configured."""
        secret = self._platform_keys.get(provider_name)
        return ProviderKey(secret=secret, source="platform") if secret else None

    def fallback(self, provider_name: str, request: ImageRequest, tried: Collection[str]) -> Route | None:
        """Where a platform-paid ``request`` that keeps failing on ``provider_name`` goes next.

        The first provider of the operator's chain that was not ``tried``, runs on a platform key,
        and takes ``request`` as it is with its default model; None when there is none. A user's
        own key is never a fallback: they did not agree to pay another provider.
        """
        for name in self._fallbacks.get(provider_name, ()):
            if name in tried or not self.platform_pays(name):
                continue
            capabilities = self._providers[name].capabilities
            if capabilities.accepts(request, capabilities.default_model):
                return Route(self._providers[name], capabilities.default_model)
        return None

    async def aclose(self) -> None:
        """Close every provider's network resources."""
        for provider in self._providers.values():
            await provider.aclose()
