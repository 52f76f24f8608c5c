"""Text form of commands: flags, free text, conversions, and refusals that say what to do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studiobot.commands import COMMANDS
from studiobot.commands.parsing import convert_args, parse_args, split_command
from studiobot.errors import BadInput

SPECS = {spec.name: spec for spec in COMMANDS}


def parse(line: str) -> dict:
    name, rest = split_command(line)
    spec = SPECS[name]
    return convert_args(spec, parse_args(spec, rest))


def test_prompt_keeps_punctuation_and_flags_take_the_rest() -> None:
    args = parse("/imagine a cat's dream, \"neon\" -- noir --ar 16:9 --n 2 --negative blurry, text --seed 42")
    assert args["prompt"] == "a cat's dream, \"neon\" -- noir"
    assert (args["aspect"], args["count"], args["negative"], args["seed"]) == ("16:9", 2, "blurry, text", 42)


def test_bot_mention_and_case_are_accepted() -> None:
    assert split_command("/Imagine@studio_bot a fox") == ("imagine", "a fox")
    assert parse("/job 12")["job_id"] == 12
    assert parse("/gallery")["page"] == 1 and parse("/gallery --before 7")["before"] == 7


def test_equals_form_of_flags() -> None:
    assert parse("/imagine a fox --ar=9:16")["aspect"] == "9:16"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("imagine a fox", "Commands start with a slash"),
        ("/job 1 2", "Too many words for /job"),
        ("/imagine a fox --ar", "--ar needs a value"),
        ("/credits --verbose", "/credits has no option --verbose. Options: none."),
    ],
)
def test_refusals(line: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse(line)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_clearly(text: str) -> None:
    """Whatever a person types, the parser answers with arguments or a BadInput, never a crash."""
    try:
        parse("/imagine " + text)
    except BadInput as refusal:
        assert refusal.message


@given(st.text(alphabet=st.characters(blacklist_characters="-", blacklist_categories=("Cs",)), min_size=1,
               max_size=100).filter(lambda t: t.strip()))
def test_prompts_without_flags_round_trip(prompt: str) -> None:
    assert parse("/imagine " + prompt)["prompt"] == prompt.strip()


def test_quoted_option_values_lose_their_quotes() -> None:
    from studiobot.commands import COMMANDS

    spec = next(c for c in COMMANDS if c.name == "admin")
    for typed in ('"bug bounty"', "“bug bounty”", "'bug bounty'", "bug bounty"):
        assert parse_args(spec, f"grant shell:ada 5 --reason {typed}")["reason"] == "bug bounty"
    assert parse_args(spec, 'grant shell:ada 5 --reason say "hi"')["reason"] == 'say "hi"'
