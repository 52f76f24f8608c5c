"""Pure parts of billing: prices as people read them, the catalogue, pass windows, settings checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from studiobot.billing.catalogue import Catalogue, duration, money
from studiobot.billing.passes import window_of
from studiobot.config import CreditPack, PassPlan, Settings


def test_money_uses_minor_units_except_for_zero_decimal_currencies() -> None:
    assert money(500, "usd") == "5.00 USD"
    assert money(123456, "eur") == "1,234.56 EUR"
    assert money(500, "jpy") == "500 JPY"


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (60, 1800, 3600, 7200, 86400, 172800, 90)] == [
        "minute", "30 minutes", "hour", "2 hours", "24 hours", "2 days", "90 seconds"]


def test_catalogue_finds_products_case_insensitively_and_describes_them() -> None:
    catalogue = Catalogue.from_settings(
        [CreditPack(id="small", credits=100, price=500, label="100 credits")],
        [PassPlan(id="day", credits_per_window=15, window_s=3600, duration_s=86400, price=300, label="Day pass")],
    )
    assert catalogue.find(" SMALL ").id == "small"  # type: ignore[union-attr]
    assert catalogue.find("nope") is None
    assert [p.describe for p in catalogue.products] == [
        "100 credits, 5.00 USD", "Day pass (15 credits every hour for 24 hours), 3.00 USD"]


def test_pass_windows_count_from_the_start() -> None:
    start = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert window_of(start, 3600, start) == 0
    assert window_of(start, 3600, start + timedelta(minutes=59, seconds=59)) == 0
    assert window_of(start, 3600, start + timedelta(hours=1)) == 1
    assert window_of(start, 3600, start + timedelta(hours=23, minutes=30)) == 23


@pytest.mark.parametrize("bad", [
    {"credit_packs": [{"id": "x", "credits": 0, "price": 500, "label": "x"}]},
    {"credit_packs": [{"id": "x", "credits": 5, "price": 10, "label": "x"}]},  # under Stripe's minimum
    {"credit_packs": [{"id": "Big Pack", "credits": 5, "price": 500, "label": "x"}]},
    {"credit_packs": [{"id": "x", "credits": 5, "price": 500, "currency": "USD", "label": "x"}]},
    {"passes": [{"id": "p", "credits_per_window": 1, "window_s": 7200, "duration_s": 3600, "price": 500,
                 "label": "p"}]},
    {"credit_packs": [{"id": "day", "credits": 5, "price": 500, "label": "x"}]},  # same id as the pass
    {"checkout_expires_s": 600},  # Stripe: at least 30 minutes
    {"clawback_policy": "forgive"},
    {"public_url": "studio.example.com"},
])
def test_a_bad_catalogue_or_billing_setting_is_refused_at_start(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **bad)


def test_public_url_is_the_base_of_landing_pages() -> None:
    assert Settings(_env_file=None, public_url="https://studio.example.com/").base_url == "https://studio.example.com"
    assert Settings(_env_file=None, web_port=9000).base_url == "http://127.0.0.1:9000"
