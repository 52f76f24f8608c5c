"""``/settings``: the caller's preferences, kept with their user so every platform sees them."""

from __future__ import annotations

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.db import users

PARAMS = (
    Param("originals", str, "Receive results as original files: on or off", choices=("on", "off"),
          positional=True),
)


async def settings(inv: Invocation, deps: Deps) -> Reply:
    """Show the caller's preferences, or change one (``/settings on`` / ``--originals off``)."""
    user_id = await deps.users.user_id(inv.user)
    chosen = inv.args["originals"]
    if chosen is not None:
        prefs = await deps.db.run(users.set_preference, user_id, "originals", chosen == "on")
    else:
        async with deps.db.read() as conn:
            prefs = await users.preferences(conn, user_id)
    originals = bool(prefs.get("originals"))
    lines = [
        "Your settings:",
        f"  originals: {'on' if originals else 'off'}, results as original files (no recompression; on Telegram, as documents).",
        "Change with /settings on or /settings off.",
    ]
    if chosen is not None:
        lines[0] = "Saved. Your settings:"
    return Reply(text="\n".join(lines), ephemeral=True, data={"originals": originals})

