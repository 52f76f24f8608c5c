"""What is for sale: the operator's credit packs and passes (settings), and how prices read.

Amounts are integers in the currency's minor unit, as Stripe takes them (``unit_amount``: cents
for USD, whole yen for JPY). The catalogue is read from settings at start; an order copies what it
sells, so changing the catalogue never changes an order already made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from studiobot.config import CreditPack, PassPlan

# Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal): the amount is whole units.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)


@dataclass(frozen=True, slots=True)
class Product:
    """A pack or a pass, as sold.

    Attributes:
        kind: ``pack`` or ``pass``.
        credits: The pack's credits, or the pass's credits per window.
        price: Minor units of ``currency``.
        window_s, duration_s: The pass's window and length in seconds (None for packs).
    """

    kind: str
    id: str
    label: str
    credits: int
    price: int
    currency: str
    window_s: int | None = None
    duration_s: int | None = None

    @property
    def describe(self) -> str:
        """One line for ``/buy``: what it gives and what it costs."""
        if self.kind == "pack":
            what = f"{self.credits} credits"
        else:
            what = (f"{self.credits} credits every {duration(self.window_s or 0)} "
                    f"for {duration(self.duration_s or 0)}")
        shown = what if self.label.lower() == what else f"{self.label} ({what})"
        return f"{shown}, {money(self.price, self.currency)}"


class Catalogue:
    """The products on sale, in the order the operator listed them (packs, then passes)."""

    def __init__(self, products: Iterable[Product]) -> None:
        self._products = tuple(products)
        self._by_id = {p.id: p for p in self._products}

    @classmethod
    def from_settings(cls, packs: Sequence[CreditPack], plans: Sequence[PassPlan]) -> Catalogue:
        """Build from the ``credit_packs`` and ``passes`` settings."""
        return cls(
            [Product("pack", p.id, p.label, p.credits, p.price, p.currency) for p in packs]
            + [
                Product("pass", p.id, p.label, p.credits_per_window, p.price, p.currency,
                        window_s=p.window_s, duration_s=p.duration_s)
                for p in plans
            ]
        )

    @property
    def products(self) -> tuple[Product, ...]:
        """Everything on sale."""
        return self._products

    def find(self, product_id: str) -> Product | None:
        """The product with this id (case-insensitive), or None."""
        return self._by_id.get(product_id.strip().lower())


def money(amount: int, currency: str) -> str:
    """``500, "usd"`` -> ``"5.00 USD"``; zero-decimal currencies have no fraction."""
    code = currency.upper()
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount:,} {code}"
    return f"{amount / 100:,.2f} {code}"


def duration(seconds: int) -> str:
    """``3600`` -> ``"hour"``, ``86400`` -> ``"24 hours"``, ``1800`` -> ``"30 minutes"``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            if unit == "day" and seconds // size == 1:
                return "24 hours"
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
