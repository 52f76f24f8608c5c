"""``/credits``: balance, running passes, debt, pending purchases and the latest ledger entries."""

from __future__ import annotations

from studiobot.billing import ledger, orders, passes
from studiobot.billing.catalogue import duration
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
    "clawback": "taken back",
    "repay": "repaid",
}
_WAITING = ("open", "awaiting_payment")


async def show_credits(inv: Invocation, deps: Deps) -> Reply:
    """Reply (ephemerally) with the caller's balance, passes, debt and their last 10 entries."""
    user_id = await deps.users.user_id(inv.user)
    async with deps.db.read() as conn:
        account = await ledger.account(conn, user_id)
        running = await passes.active(conn, user_id)
        entries = await ledger.history(conn, user_id, limit=10)
        pending = [o for o in await orders.of_user(conn, user_id, limit=3) if o.status in _WAITING]
    lines = [f"Balance: {fmt(account.net)}."]
    if account.owed:
        lines[0] = (f"Balance: {fmt(-account.owed)} (you owe {fmt(account.owed)} taken back after a refund "
                    "or dispute; it is repaid from the next credits you get).")
    for p in running:
        lines.append(
            f"Pass: {p.label}: {p.left} of {p.credits_per_window} left this {duration(p.window_s)} "
            f"(more at {p.window_ends_at:%H:%M} UTC), until {p.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Images use it before your credits."
        )
    for o in pending:
        state = "waiting for you to pay" if o.status == "open" else "payment processing"
        lines.append(f"Order #{o.id} ({o.label}): {state}.")
    if entries:
        lines.append("Latest:")
    for e in entries:
        what = _KIND_WORDS.get(e.kind, e.kind)
        target = f" job #{e.job_id}" if e.job_id else f" order #{e.order_id}" if e.order_id else ""
        note = f" ({e.note})" if e.note and (not e.job_id or "pass" in e.note) else ""
        amount = f"{e.amount:+d}" if e.amount else "±0"
        lines.append(f"  {e.created_at:%Y-%m-%d %H:%M} {amount:>5}  {what}{target}{note} → {e.balance_after}")
    return Reply(
        text="\n".join(lines),
        ephemeral=True,
        data={
            "balance": account.net,
            "owed": account.owed,
            "passes": [{"label": p.label, "left": p.left, "per_window": p.credits_per_window,
                        "expires_at": p.expires_at.isoformat()} for p in running],
            "entries": [
                {"kind": e.kind, "amount": e.amount, "balance_after": e.balance_after, "job_id": e.job_id,
                 "order_id": e.order_id}
                for e in entries
            ],
        },
    )
