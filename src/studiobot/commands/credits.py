"""``/credits``: balance and the latest ledger entries."""

from __future__ import annotations

from studiobot.billing import ledger
from studiobot.commands.contract import Invocation, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.presenter import credits as fmt

_KIND_WORDS = {
    "grant": "granted",
    "purchase": "bought",
    "reserve": "held for",
    "capture": "spent on",
    "refund": "refunded from",
    "adjustment": "adjusted",
    "pass": "pass",
}


async def show_credits(inv: Invocation, deps: Deps) -> Reply:
    """Reply (ephemerally) with the caller's balance and their last 10 entries."""
    user_id = await deps.users.user_id(inv.user)
    async with deps.db.read() as conn:
        balance = await ledger.current_balance(conn, user_id)
        entries = await ledger.history(conn, user_id, limit=10)
    lines = [f"Balance: {fmt(balance)}."]
    if entries:
        lines.append("Latest:")
    for e in entries:
        what = _KIND_WORDS.get(e.kind, e.kind)
        target = f" job #{e.job_id}" if e.job_id else ""
        note = f" ({e.note})" if e.note and not e.job_id else ""
        amount = f"{e.amount:+d}" if e.amount else "±0"
        lines.append(f"  {e.created_at:%Y-%m-%d %H:%M} {amount:>5}  {what}{target}{note} → {e.balance_after}")
    return Reply(
        text="\n".join(lines),
        ephemeral=True,
        data={
            "balance": balance,
            "entries": [
                {"kind": e.kind, "amount": e.amount, "balance_after": e.balance_after, "job_id": e.job_id}
                for e in entries
            ],
        },
    )
