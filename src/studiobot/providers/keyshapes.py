"""Recognising credentials pasted into chat, so adapters can remove them before anyone copies them.

The shapes are the vendors' published prefixes and lengths; a match is a strong hint, not proof,
so callers only ever delete the message and warn, never store what matched.
"""

from __future__ import annotations

import re

#: (what it is, pattern). Patterns need a word boundary on both sides so that ordinary words
#: that merely start like a prefix ("sk-etch") do not match.
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an OpenAI or Stability AI API key", re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("a Replicate API token", re.compile(r"(?<![\w-])r8_[A-Za-z0-9]{30,}")),
    ("a Hugging Face token", re.compile(r"(?<![\w-])hf_[A-Za-z0-9]{30,}")),
    ("a fal.ai key", re.compile(
        r"(?<![\w-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{32}(?![\w-])"
    )),
    ("a Stripe secret key", re.compile(r"(?<![\w-])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}")),
    # Stripe endpoint secrets and Standard Webhooks ones (Replicate): whsec_ then base64.
    ("a webhook signing secret", re.compile(r"(?<![\w-])whsec_[A-Za-z0-9+/=]{24,}")),
    # KIE.ai keys are 32 hex digits, no prefix; both a digit and a letter are required so that
    # a run of 32 digits (or of the letters a-f) is not taken for one.
    ("a KIE.ai API key", re.compile(r"(?<![\w-])(?=[0-9a-fA-F]{0,31}[0-9])(?=[0-9a-fA-F]{0,31}[a-fA-F])[0-9a-fA-F]{32}(?![\w-])")),
    ("a Telegram bot token", re.compile(r"(?<![\w:])\d{6,12}:AA[A-Za-z0-9_-]{30,}")),
    ("a Discord bot token", re.compile(r"(?<![\w.-])[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}")),
)


def looks_like_key(text: str) -> str | None:
    """What kind of credential ``text`` seems to contain (e.g. ``"a Replicate API token"``), or None.

    Args:
        text: A chat message as typed.
    """
    for kind, pattern in _SHAPES:
        if pattern.search(text):
            return kind
    return None
