"""A command with a secret parameter (the shape ``/keys add`` has), for the adapters' secrets tests.

The adapters are generic over the command table; giving them this one extra command proves their
private path for secrets on its own.
"""

from __future__ import annotations

from studiobot.commands.contract import CommandSpec, Invocation, Param, Reply
from studiobot.commands.deps import Deps

SECRET = "sk-test-Sup3rS3cretKey-0123456789"
#: Keys the command received, in order (tests clear it first).
received: list[str] = []


async def remember_key(inv: Invocation, deps: Deps) -> Reply:
    """Keep the key and answer privately with its last four characters, as ``/keys add`` will."""
    received.append(inv.args["key"])
    return Reply(text=f"Stored your {inv.args['provider']} key ending in {inv.args['key'][-4:]}.",
                 ephemeral=True, private=True)


KEY_COMMAND = CommandSpec(
    "remember", "Store a provider key.", remember_key,
    (Param("provider", str, "Which provider", required=True, positional=True),
     Param("key", str, "your API key", required=True, secret=True)),
    ephemeral=True,
)
