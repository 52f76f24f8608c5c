"""``/keys``: users' own provider API keys: add (privately), list, remove, test.

A key is taken only where nobody else can see it: a Discord modal (ephemeral), a Telegram private
chat (the message holding it is deleted at once), or the terminal. It is checked with the provider
before it is stored, stored encrypted, and never shown again except as its last four characters
(reference rules section 5). While a user has an active key for a provider, their jobs there use
it and cost no credits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.parsing import small_number
from studiobot.errors import BadInput, NotFound
from studiobot.providers.base import Provider, ProviderKey
from studiobot.providers.errors import AuthError, ProviderError, QuotaExhausted
from studiobot.vault.store import ACTIVE, INVALID, DuplicateKey, StoredKey, Vault

ACTIONS = ("list", "add", "remove", "test")
#: Longest key accepted; real ones are well under 200 characters.
MAX_KEY_CHARS = 500
MAX_LABEL_CHARS = 40  # api_keys.label
_NO_VAULT = "Personal API keys are not enabled on this bot; the operator has not set a master key."


def _providers(_typed: object, current: str, deps: Deps) -> list[str]:
    return [n for n in deps.router.keyed_names if n.startswith(current.strip().lower())]


def _check_add(provider: str | None, args: Mapping[str, Any], deps: Deps) -> None:
    """``/keys add``: keys are enabled and the provider takes personal keys, checked before the key
    is asked for (the dispatcher's ``admit``), so a refused command never swallows it.

    Raises:
        BadInput: No master key configured, no provider named, or one that takes no personal key.
    """
    if args.get("action") != "add":
        return
    if deps.vault is None:
        raise BadInput(_NO_VAULT)
    _keyed_provider(deps, provider)


def _check_label(label: str | None, _args: Mapping[str, Any], _deps: Deps) -> None:
    if label is not None and len(label) > MAX_LABEL_CHARS:
        raise BadInput(f"Labels are at most {MAX_LABEL_CHARS} characters; nothing was stored.")


PARAMS = (
    Param("action", str, "add, list, remove or test", positional=True, choices=ACTIONS, default="list"),
    Param("provider", str, "Which provider (or, for remove and test, a key's label or #number)",
          positional=True, max_value=40, suggest=_providers, check=_check_add),
    # No length limit for the platforms (a Discord option would refuse a pasted key silently): the
    # dispatcher refuses a key typed here, unstored, and _check_label the rest, both before the key
    # itself is asked for.
    Param("label", str, "A name for the key (add only)", positional=True, check=_check_label),
    Param("key", str, "your API key", secret=True, ask_when=("action", "add"), max_value=MAX_KEY_CHARS),
)


async def keys(inv: Invocation, deps: Deps) -> Reply:
    """Run ``/keys <action>``; every answer is private (ephemeral, or a direct message)."""
    vault = deps.vault
    if vault is None:
        raise BadInput(_NO_VAULT)
    user_id = await deps.users.user_id(inv.user)
    action = inv.args["action"] or "list"
    if action == "add":
        text = await _add(inv, deps, vault, user_id)
    elif action == "remove":
        text = await _remove(inv, vault, user_id)
    elif action == "test":
        text = await _test(inv, deps, vault, user_id)
    else:
        text = _listing(await vault.keys_of(user_id))
    return Reply(text=text, ephemeral=True, private=True)


async def _add(inv: Invocation, deps: Deps, vault: Vault, user_id: int) -> str:
    provider = _keyed_provider(deps, inv.args["provider"])
    label = (inv.args["label"] or "").strip()
    secret = (inv.args.get("key") or "").strip()
    if not secret:
        raise BadInput(f"Send the key itself: /keys add {provider.name} opens a private prompt for it.")
    if any(c.isspace() for c in secret) or len(secret) > MAX_KEY_CHARS:
        raise BadInput("That does not look like an API key (it has spaces or is very long); nothing was stored.")
    warning = ""
    try:
        await provider.check_key(ProviderKey(secret=secret, source="user"))
    except AuthError:
        return f"{provider.name} refused that key, so I did not store it. Check that you copied all of it."
    except QuotaExhausted:  # a valid key on an empty account: stored, with a warning
        warning = f"Note: {provider.name} says the account behind it has no quota left."
    except ProviderError:
        return (f"I could not reach {provider.name} to check the key, so nothing was stored; "
                "please try again in a moment.")
    try:
        stored = await vault.add(user_id, provider.name, secret, label)
    except DuplicateKey as duplicate:
        return f"You already added that key: {_line(duplicate.existing)}."
    lines = [
        f"Stored your {provider.name} key {stored.hint}{_label(stored)} (#{stored.id}), encrypted.",
        f"Your {provider.name} jobs now use it and cost no credits; {provider.name} bills you directly.",
    ]
    lines += [warning, f"Remove it any time with /keys remove {provider.name}."]
    return "\n".join(line for line in lines if line)


async def _remove(inv: Invocation, vault: Vault, user_id: int) -> str:
    key = _one(await vault.keys_of(user_id), inv.args["provider"], "remove")
    if not await vault.remove(user_id, key.id):
        raise NotFound("That key was already removed.")
    return f"Removed your {key.provider} key {key.hint}{_label(key)}. It is deleted, not just disabled."


async def _test(inv: Invocation, deps: Deps, vault: Vault, user_id: int) -> str:
    stored = await vault.keys_of(user_id)
    chosen = [_one(stored, inv.args["provider"], "test")] if inv.args["provider"] else stored
    if not chosen:
        return _listing(stored)
    lines = []
    for key in chosen:
        secret = await vault.provider_key(key.id)
        if secret is None:
            continue
        try:
            await deps.router.provider(key.provider).check_key(secret)
        except AuthError:
            await vault.mark(key.id, INVALID)
            lines.append(f"{key.provider} {key.hint}: refused; marked invalid. Add a new key with "
                         f"/keys add {key.provider}.")
            continue
        except QuotaExhausted:
            verdict = "works, but the account has no quota left"
        except ProviderError:
            lines.append(f"{key.provider} {key.hint}: could not be checked now; try again in a moment.")
            continue
        else:
            verdict = "works"
        await vault.mark(key.id, ACTIVE)
        lines.append(f"{key.provider} {key.hint}{_label(key)}: {verdict}.")
    return "\n".join(lines) or "Nothing to test."


def _keyed_provider(deps: Deps, name: str | None) -> Provider:
    offered = ", ".join(deps.router.keyed_names)
    if not name:
        raise BadInput(f"Which provider is the key for? /keys add <provider>, one of: {offered}.")
    name = name.strip().lower()
    if name not in deps.router.keyed_names:
        raise BadInput(f"There is no provider '{name}' that takes your own key here. Choose one of: {offered}.")
    return deps.router.provider(name)


def _one(stored: list[StoredKey], which: str | None, verb: str) -> StoredKey:
    """The key ``which`` names: ``#id``, a label, or a provider with exactly one key."""
    if not which:
        raise BadInput(f"Which key? /keys {verb} <provider, label or #number>; /keys list shows them.")
    which = which.strip()
    if which.startswith("#") and (number := small_number(which[1:])) is not None:
        matches = [k for k in stored if k.id == number]
    else:
        matches = [k for k in stored if k.label == which] or [k for k in stored if k.provider == which.lower()]
    if not matches:
        raise NotFound(f"You have no key '{which}'. /keys list shows yours.")
    if len(matches) > 1:
        numbers = ", ".join(f"#{k.id}" for k in matches)
        raise BadInput(f"You have several keys for '{which}' ({numbers}); name one, e.g. /keys {verb} #{matches[0].id}.")
    return matches[0]


def _listing(stored: list[StoredKey]) -> str:
    if not stored:
        return ("You have no API keys here. Add one with /keys add <provider> in a private chat with me; "
                "jobs then use your key and cost no credits.")
    return "Your API keys (only the last four characters are ever shown):\n" + "\n".join(
        f"• {_line(k)}" for k in stored
    )


def _line(key: StoredKey) -> str:
    used = key.last_used_at.strftime("%Y-%m-%d %H:%M UTC") if key.last_used_at else "never"
    return f"#{key.id} {key.provider}{_label(key)} {key.hint}: {key.status}, last used {used}"


def _label(key: StoredKey) -> str:
    return f" “{key.label}”" if key.label else ""
