"""Text form of commands: ``/imagine a red fox, watercolour --ar 16:9 --count 2``.

Used by every text surface (the shell, Telegram messages, button actions). The free text before the
first ``--flag`` belongs to the command's ``rest`` parameter (or its positional ones); each flag's
value runs to the next flag, so prompts may hold commas, quotes and apostrophes unescaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from studiobot.commands.contract import CommandSpec, Param
from studiobot.errors import BadInput

_FLAG = re.compile(r"(?:^|\s)--([A-Za-z][A-Za-z0-9_-]*)(?=\s|=|$)=?")


def split_command(text: str) -> tuple[str, str]:
    """Split ``/name@bot rest`` into (``name``, ``rest``).

    Raises:
        BadInput: When the text does not start with a slash command.
    """
    text = text.strip()
    match = re.match(r"/([A-Za-z][A-Za-z0-9_]*)(?:@\S+)?(?:\s+|$)", text)
    if not match:
        raise BadInput("Commands start with a slash, e.g. /imagine a lighthouse at dusk. Try /help.")
    return match.group(1).lower(), text[match.end():]


def parse_args(spec: CommandSpec, text: str) -> dict[str, Any]:
    """Parse a command's argument text into raw strings by parameter name (not yet converted).

    Raises:
        BadInput: Unknown flag, a flag given twice, or too many positional words.
    """
    by_flag: dict[str, Param] = {}
    for param in spec.params:
        for flag in (param.name, *param.aliases):
            by_flag[flag.lower().replace("_", "-")] = param
    matches = list(_FLAG.finditer(text))
    head = text[: matches[0].start()] if matches else text
    raw: dict[str, Any] = {}
    _assign_head(spec, head.strip(), raw)
    for i, match in enumerate(matches):
        flag = match.group(1).lower().replace("_", "-")
        param = by_flag.get(flag)
        if param is None:
            known = ", ".join(f"--{p.name}" for p in spec.params if not p.rest) or "none"
            raise BadInput(f"/{spec.name} has no option --{flag}. Options: {known}.")
        if param.name in raw:
            raise BadInput(f"--{param.name} was given twice.")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = _unquote(text[match.end() : end].strip())
        if not value:
            raise BadInput(f"--{flag} needs a value. Usage: {spec.usage()}")
        raw[param.name] = value
    return raw


_QUOTES = {'"': '"', "'": "'", "“": "”", "«": "»"}


def _unquote(value: str) -> str:
    """``"bug bounty"`` -> ``bug bounty``: people quote multi-word values out of habit."""
    if len(value) >= 2 and _QUOTES.get(value[0]) == value[-1]:
        return value[1:-1].strip()
    return value


def _assign_head(spec: CommandSpec, head: str, raw: dict[str, Any]) -> None:
    if not head:
        return
    rest = next((p for p in spec.params if p.rest), None)
    positional = [p for p in spec.params if p.positional]
    if rest is not None:
        # Positional words first (``/mod ban @ann``), then the free text (``3d spamming``).
        words = head.split(maxsplit=len(positional))
        for param, word in zip(positional, words, strict=False):
            raw[param.name] = word
        if len(words) > len(positional):
            raw[rest.name] = words[-1]
        return
    words = head.split()
    if len(words) > len(positional):
        raise BadInput(f"Too many words for /{spec.name}. Usage: {spec.usage()}")
    for param, word in zip(positional, words, strict=False):
        raw[param.name] = word


def convert_args(spec: CommandSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Convert and validate raw values against the spec; fill defaults.

    Accepts strings (text surfaces) or already-typed values (platforms with typed options).

    Raises:
        BadInput: Missing required value, wrong type, out of range, not among the choices.
    """
    unknown = set(raw) - {p.name for p in spec.params}
    if unknown:
        raise BadInput(f"/{spec.name} has no option {', '.join(sorted(unknown))}.")
    args: dict[str, Any] = {}
    for param in spec.params:
        value = raw.get(param.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if param.required:
                raise BadInput(f"/{spec.name} needs {param.name}. Usage: {spec.usage()}")
            args[param.name] = param.default
            continue
        args[param.name] = _convert(spec, param, value)
    return args


#: Whole numbers as typed: ASCII digits only. Python's int() also takes other scripts' digits
#: ("٣", "３") and underscores, which would reach the database as numbers nobody meant to type.
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
#: Every int parameter is stored or compared in a BIGINT column (PostgreSQL and SQLite: signed
#: 64-bit); a larger number would fail in the driver instead of being refused here.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _convert(spec: CommandSpec, param: Param, value: Any) -> Any:
    if param.kind is int:
        return _integer(param, value)
    text = str(value).strip()
    if param.choices and text.lower() not in param.choices:
        raise BadInput(f"{param.name} must be one of: {', '.join(param.choices)}.")
    _check_range(param, len(text), text)
    return text.lower() if param.choices else text


def _integer(param: Param, value: Any) -> int:
    """An int parameter's value: ASCII digits with an optional sign, within signed 64 bits.

    Raises:
        BadInput: Not a whole number, written with other digits than 0-9, beyond 64 bits, or
            out of the parameter's range.
    """
    text = str(value).strip()
    shown = text if len(text) <= 24 else text[:24] + "…"
    if not _INTEGER.fullmatch(text):
        if re.fullmatch(r"[+-]?\d+", text):  # digits of another script, or full-width ones
            raise BadInput(f"{param.name} must be written with the digits 0-9, not '{shown}'.")
        raise BadInput(f"{param.name} must be a whole number, not '{text[:20]}'.")
    # Checked on the text: int() of thousands of digits is slow (and refused above 4,300).
    if len(text.lstrip("+-").lstrip("0")) > 19 or not INT64_MIN <= int(text) <= INT64_MAX:
        limit = f"too small (the limit is {INT64_MIN})" if text.startswith("-") else (
            f"too large (the limit is {INT64_MAX})")
        raise BadInput(f"{shown} is not a valid {param.name}: it is {limit}.")
    number = int(text)
    _check_range(param, number, number)
    return number


def small_number(text: str) -> int | None:
    """``text`` as a non-negative int when it is 1 to 18 ASCII digits, else None.

    For numbers read out of free text (``/mod limits per-hour 20``, ``#12``): ``str.isdigit``
    accepts "²", which ``int`` refuses, and 18 digits always fit the database's 64-bit integers.
    """
    return int(text) if _SMALL_NUMBER.fullmatch(text) else None


_SMALL_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)


def _check_range(param: Param, measure: int, shown: Any) -> None:
    low, high = param.min_value, param.max_value
    if (low is not None and measure < low) or (high is not None and measure > high):
        if param.kind is int:
            bounds = f"from {low} to {high}" if low is not None and high is not None else (
                f"at least {low}" if low is not None else f"at most {high}"
            )
            raise BadInput(f"{param.name} must be a whole number {bounds}, not {shown}.")
        if low is not None and high is not None:
            raise BadInput(f"{param.name} must be {low} to {high} characters long.")
        raise BadInput(f"{param.name} must be at least {low} characters long." if low is not None
                       else f"{param.name} must be at most {high} characters long.")
