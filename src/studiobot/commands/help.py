"""``/help``: generated from the command table, so it is never out of date."""

from __future__ import annotations

from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps

PARAMS = (Param("command", str, "Show details of one command", positional=True),)


async def show_help(inv: Invocation, deps: Deps) -> Reply:
    """List commands, or explain one command's options."""
    from studiobot.commands import COMMANDS  # the table imports this module

    wanted = (inv.args["command"] or "").lstrip("/").lower()
    if wanted:
        spec = next((c for c in COMMANDS if c.name == wanted), None)
        if spec is None:
            return Reply(text=f"Unknown command /{wanted}.", ephemeral=True)
        lines = [f"/{spec.name}: {spec.summary}", f"Usage: {spec.usage()}"]
        for p in spec.params:
            extra = f" (one of {', '.join(p.choices)})" if p.choices else ""
            alias = f", --{', --'.join(p.aliases)}" if p.aliases else ""
            name = p.name if p.rest or p.positional else f"--{p.name}{alias}"
            lines.append(f"  {name}: {p.description}{extra}")
        if spec.name == "imagine":
            lines.append(f"  Providers here: {', '.join(deps.router.names)}.")
        return Reply(text="\n".join(lines), ephemeral=True)
    lines = ["studiobot makes images from your words. Commands:"]
    lines += [f"  {c.usage()}\n      {c.summary}" for c in COMMANDS if c.who == "anyone"]
    lines.append("Example: /imagine a lighthouse at dusk, oil painting --ar 16:9")
    return Reply(text="\n".join(lines), ephemeral=True)
