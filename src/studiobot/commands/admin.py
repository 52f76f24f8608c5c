"""Operator tools: grant or remove credits with a reason, and read anyone's ledger.

The same functions serve the ``/admin`` chat command (operators only) and ``studiobot admin`` on
the command line. Every manual change is an ``adjustment`` ledger entry naming who made it and why.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy.engine import Connection

from studiobot.billing import ledger, orders, passes
from studiobot.commands.contract import Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.parsing import small_number
from studiobot.commands.presenter import credits as fmt
from studiobot.db import moderation, users
from studiobot.db.engine import Database
from studiobot.db.moderation import Actor
from studiobot.errors import BadInput, InsufficientCredits, NotFound

PARAMS = (
    Param("action", str, "grant (or remove with a negative amount) or ledger", required=True,
          positional=True, choices=("grant", "ledger")),
    Param("user", str, "platform:id (e.g. telegram:1234), a mention, or #user-number", required=True,
          positional=True, max_value=100),
    Param("credits", int, "Credits to add (negative to remove); grant only", positional=True,
          min_value=-1_000_000, max_value=1_000_000),
    Param("reason", str, "Why (kept in the ledger); grant only", max_value=150),
)

_MENTION = re.compile(r"^<@!?(\d+)>$")


async def find_user(db: Database, who: str, *, platform: str) -> tuple[int, str]:
    """The user named ``who``: ``platform:id``, ``#<user number>``, a Discord mention or a bare id
    on ``platform``. Returns (user id, how to show them).

    Raises:
        NotFound: Nobody by that name has used studiobot.
    """
    who = who.strip()
    async with db.read() as conn:
        if who.startswith("#") and who[1:].isdigit():
            user_id = small_number(who[1:])
            if user_id is None or await users.display_name(conn, user_id) is None:
                raise NotFound(f"There is no user {who}.")
            return user_id, who
        mention = _MENTION.match(who)
        if mention:
            who = mention.group(1)
        name, _, ident = who.partition(":")
        target_platform, ident = (name, ident) if ident else (platform, who.lstrip("@"))
        user_id = await users.find_user_id(conn, target_platform, ident)
    if user_id is None:
        raise NotFound(f"Nobody with the id {target_platform}:{ident} has used studiobot yet.")
    return user_id, f"{target_platform}:{ident}"


async def grant(db: Database, who: str, amount: int, reason: str, *, actor: str, platform: str) -> str:
    """Add (or with a negative ``amount`` remove) credits with a reason. Returns what was done.

    Raises:
        BadInput: No amount, a zero amount, or no reason.
        NotFound: Unknown user.
        InsufficientCredits: A removal larger than the balance (nothing changes).
    """
    if not amount:
        raise BadInput("Say how many credits, e.g. /admin grant telegram:1234 50 --reason \"contest prize\".")
    if not reason or not reason.strip():
        raise BadInput("Every manual change needs a reason: add --reason \"...\".")
    user_id, shown = await find_user(db, who, platform=platform)
    key = f"adjust:{uuid.uuid4().hex}"
    try:
        balance = await db.run(_adjust, user_id, amount, key, actor, reason.strip()[:200], shown)
    except InsufficientCredits as error:
        raise BadInput(f"{shown} has only {error.available} credits; remove at most that many.") from None
    verb = "Added" if amount > 0 else "Removed"
    return f"{verb} {fmt(abs(amount))} {'to' if amount > 0 else 'from'} {shown} ({reason.strip()}). Balance: {fmt(balance)}."


def _adjust(conn: Connection, user_id: int, amount: int, key: str, actor: str, note: str, shown: str) -> int:
    """The adjustment and its audit entry, in one transaction."""
    balance = ledger.adjust(conn, user_id, amount, key=key, actor=actor, note=note)
    moderation.audit(conn, Actor(actor, None), "grant" if amount > 0 else "remove credits", shown, f"{amount:+d}: {note}")
    return balance


async def ledger_text(db: Database, who: str, *, platform: str, limit: int = 20) -> str:
    """A user's balance, debt, passes, recent orders and newest ledger entries, as text.

    Raises:
        NotFound: Unknown user.
    """
    user_id, shown = await find_user(db, who, platform=platform)
    async with db.read() as conn:
        account = await ledger.account(conn, user_id)
        entries = await ledger.history(conn, user_id, limit=limit)
        running = await passes.active(conn, user_id)
        recent = await orders.of_user(conn, user_id, limit=5)
    lines = [f"{shown} (user #{user_id}): balance {fmt(account.balance)}"
             + (f", owes {fmt(account.owed)}" if account.owed else "") + "."]
    lines += [f"  pass: {p.label}, {p.left}/{p.credits_per_window} left this window, ends "
              f"{p.expires_at:%Y-%m-%d %H:%M}" for p in running]
    lines += [f"  order #{o.id}: {o.label}, {o.status}, {o.created_at:%Y-%m-%d %H:%M}"
              + (f", {o.credits_clawed} clawed back" if o.credits_clawed else "") for o in recent]
    lines.append("Entries (newest first):")
    for e in entries:
        ref = f" job #{e.job_id}" if e.job_id else f" order #{e.order_id}" if e.order_id else ""
        by = f" by {e.actor}" if e.actor else ""
        note = f" ({e.note})" if e.note else ""
        lines.append(f"  {e.created_at:%Y-%m-%d %H:%M} #{e.id} {e.kind}{ref} {e.amount:+d} → {e.balance_after}{by}{note}")
    return "\n".join(lines)


async def admin(inv: Invocation, deps: Deps) -> Reply:
    """``/admin grant USER CREDITS --reason ...`` and ``/admin ledger USER`` (operators only)."""
    actor = f"{inv.user.platform}:{inv.user.platform_user_id}"
    if inv.args["action"] == "grant":
        text = await grant(deps.db, inv.args["user"], inv.args.get("credits") or 0, inv.args.get("reason") or "",
                           actor=actor, platform=inv.chat.platform)
    else:
        text = await ledger_text(deps.db, inv.args["user"], platform=inv.chat.platform)
    return Reply(text=text, ephemeral=True)
