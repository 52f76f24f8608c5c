"""Choosing a provider, a model and who pays (the platform's key or, later, the user's own).

The router only knows the providers the composition root built, so a provider whose platform key
is not configured simply is not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from studiobot.errors import BadInput
from studiobot.providers.base import Provider, ProviderKey


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the provider, the model and whose key pays (``platform``/``user``)."""

    provider: Provider
    model: str
    key_source: str


class Router:
    """Provider registry and routing decisions.

    Args:
        providers: Providers by name, in the order they are offered to users.
        default: Name of the provider used when the user names none.
        platform_keys: The operator's keys by provider name (providers needing none are absent).
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        default: str,
        platform_keys: Mapping[str, str] | None = None,
    ) -> None:
        if default not in providers:
            raise ValueError(f"default provider {default!r} is not configured")
        self._providers = dict(providers)
        self._default = default
        self._platform_keys = dict(platform_keys or {})

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the configured providers."""
        return tuple(self._providers)

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
        return Route(provider=provider, model=chosen, key_source="platform")

    def key_for(self, provider_name: str, key_source: str) -> ProviderKey | None:
        """The key to call ``provider_name`` with for a job, or None when it needs none."""
        if key_source != "platform":
            raise ValueError(f"key source {key_source!r} is not supported yet")
        secret = self._platform_keys.get(provider_name)
        return ProviderKey(secret=secret, source="platform") if secret else None

    async def aclose(self) -> None:
        """Close every provider's network resources."""
        for provider in self._providers.values():
            await provider.aclose()
