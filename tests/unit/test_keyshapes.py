"""Key shapes added for the core's screening (issue 15 item 6): KIE.ai keys and webhook secrets,
without taking ordinary numbers or words for keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studiobot.providers.keyshapes import looks_like_key


@pytest.mark.parametrize(("text", "kind"), [
    ("3f9c2b7e4a1d8c6b5e0f9a2d7c4b1e8a", "a KIE.ai API key"),
    ("my kie key 3F9C2B7E4A1D8C6B5E0F9A2D7C4B1E8A thanks", "a KIE.ai API key"),
    ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a webhook signing secret"),
    ("rk_live_51Hx9aBcDeFgHiJkLmNoPqRsTuV", "a Stripe secret key"),
])
def test_new_shapes_are_recognised(text: str, kind: str) -> None:
    assert looks_like_key(text) == kind


@pytest.mark.parametrize("text", [
    "12345678901234567890123456789012",  # 32 digits: a number, not a key
    "abcdefabcdefabcdefabcdefabcdefab",  # 32 letters a-f
    "3f9c2b7e4a1d8c6b5e0f9a2d7c4b1e8a0",  # 33 hex digits: a longer hash
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1
    "whsec_short",
])
def test_near_misses_are_not_keys(text: str) -> None:
    assert looks_like_key(text) is None


@given(st.integers(min_value=0))
def test_numbers_are_never_keys(number: int) -> None:
    assert looks_like_key(f"a fox number {number}") is None
