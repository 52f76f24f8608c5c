"""``/buy``: the packs and passes for sale, and a private Stripe Checkout link for one of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from studiobot.billing.catalogue import Product
from studiobot.billing.gateway import PaymentsUnavailable
from studiobot.commands.contract import Button, Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.errors import BadInput, UserError


def _suggest_products(args: Mapping[str, Any], typed: str, deps: Deps) -> Sequence[str]:
    if deps.billing is None:
        return ()
    return [p.id for p in deps.billing.catalogue.products if p.id.startswith(typed.lower())]


PARAMS = (
    Param("item", str, "The pack or pass to buy (leave out to see what is for sale)", positional=True,
          max_value=40, suggest=_suggest_products),
)

NOT_SELLING = (
    "Purchases are not set up on this studiobot: the operator has not connected Stripe. "
    "Ask them for credits."
)


async def buy(inv: Invocation, deps: Deps) -> Reply:
    """List what is for sale, or answer privately with a Checkout link for ``item``.

    Raises:
        BadInput: ``item`` is not in the catalogue (nothing is created).
        UserError: Stripe is not configured, or could not be reached (nothing is charged).
    """
    billing = deps.billing
    wanted = inv.args.get("item")
    if billing is None or not billing.catalogue.products:
        raise UserError(NOT_SELLING)
    if not wanted:
        return _catalogue_reply(billing.catalogue.products, selling=billing.selling)
    product = billing.catalogue.find(wanted)
    if product is None:
        names = ", ".join(p.id for p in billing.catalogue.products)
        raise BadInput(f"There is nothing called “{wanted}” for sale. Choose one of: {names} (see /buy).")
    if not billing.selling:
        raise UserError(NOT_SELLING)
    user_id = await deps.users.user_id(inv.user)
    try:
        checkout = await billing.start_checkout(
            user_id, product, origin_platform=inv.chat.platform, origin_chat=inv.chat.to_dict()
        )
    except PaymentsUnavailable:
        # The next /buy is a new attempt with a new idempotency key, so trying again at once works
        # as soon as Stripe does.
        raise UserError(
            "Stripe could not make a payment link just now, so nothing was charged. "
            f"Please try /buy {product.id} again; if it keeps failing, wait a few minutes."
        ) from None
    what = f"{product.credits} credits" if product.kind == "pack" else product.label
    lines = [
        f"Order #{checkout.order_id}: {product.describe}.",
        f"Pay securely with Stripe: {checkout.url}",
        f"The link works until {checkout.expires_at:%Y-%m-%d %H:%M} UTC. "
        f"{what[0].upper() + what[1:]} {'are' if product.kind == 'pack' else 'is'} yours as soon as "
        "Stripe confirms the payment, and I will tell you here.",
    ]
    if checkout.reused:
        lines.insert(0, "You already have a payment link for this; here it is again.")
    return Reply(
        text="\n".join(lines),
        ephemeral=True,
        private=True,
        data={"order_id": checkout.order_id, "checkout_url": checkout.url, "product": product.id},
    )


def _catalogue_reply(products: Sequence[Product], *, selling: bool) -> Reply:
    packs = [p for p in products if p.kind == "pack"]
    plans = [p for p in products if p.kind == "pass"]
    lines = []
    if packs:
        lines.append("Credit packs:")
        lines += [f"  {p.id}: {p.describe}" for p in packs]
    if plans:
        lines.append("Passes (used before your credits while they run):")
        lines += [f"  {p.id}: {p.describe}" for p in plans]
    if selling:
        lines.append("Buy one with /buy <name>, e.g. /buy " + products[0].id + ". The payment link comes privately.")
    else:
        lines.append(NOT_SELLING)
    buttons = [Button(f"Buy {p.id}", f"buy {p.id}", "primary") for p in products[:5]] if selling else []
    return Reply(
        text="\n".join(lines),
        ephemeral=True,
        buttons=buttons,
        data={"products": [{"id": p.id, "kind": p.kind, "price": p.price, "currency": p.currency}
                           for p in products]},
    )
