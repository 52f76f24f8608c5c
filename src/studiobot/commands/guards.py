"""The guards every command passes before it may charge anything (DESIGN.md section 3, step 2):
is the user banned here, and does the prompt contain a blocked term?

Bans and blocked terms are few and read on every command, so all of them are held in memory and
reloaded every :attr:`Guards.ttl_s` seconds (another process's ``/mod ban`` takes effect within
that time; this process's at once, through :meth:`Guards.forget`).

Blocked regular expressions run on RE2 (google-re2): matching takes time linear in the prompt
whatever an admin writes, so a careless pattern cannot stall the bot (Python's ``re``
backtracks, and a pattern like ``(a+)+$`` takes exponential time).
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import re2

from studiobot.db import moderation
from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.db.moderation import BanRow, TermRow
from studiobot.errors import BadInput, NotAllowed

MAX_PATTERN_CHARS = 200


@dataclass(frozen=True, slots=True)
class _Term:
    shown: str  # what a refusal names: the term itself, or "a blocked pattern" for an expression
    pattern: re2._Regexp  # type: ignore[name-defined]


def compile_term(pattern: str, is_regex: bool) -> re2._Regexp:  # type: ignore[name-defined]
    """The matcher of one blocked term: a plain term matches as a whole word or phrase, in any
    case; a regular expression (RE2 syntax) matches anywhere, in any case.

    Raises:
        BadInput: An empty or too long term, or a regular expression RE2 cannot compile.
    """
    text = pattern.strip()
    if not text:
        raise BadInput("Say which word, phrase or re:<regular expression> to block.")
    if len(text) > MAX_PATTERN_CHARS:
        raise BadInput(f"Blocked terms are at most {MAX_PATTERN_CHARS} characters.")
    # Not \b: a term may begin or end with punctuation ("c++"); RE2 has no look-behind either.
    source = text if is_regex else r"(?:^|\W)" + re2.escape(normalize(text)) + r"(?:\W|$)"
    try:
        return re2.compile("(?i)" + source)
    except re2.error as error:
        raise BadInput(f"That regular expression does not compile ({error}); RE2 syntax is expected.") from None


def normalize(text: str) -> str:
    """Prompt text as terms are matched against: NFKC (full-width and styled letters become plain
    ones, so "ｆｏｏ" cannot slip past "foo") and case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def parse_term(text: str) -> tuple[str, bool]:
    """``re:<expression>`` is a regular expression; anything else a plain term."""
    text = text.strip()
    return (text[3:].strip(), True) if text.startswith("re:") else (text, False)


class Guards:
    """Bans and blocklists, held in memory.

    Args:
        db: Database.
        ttl_s: How often everything is reloaded (the delay before another process's change shows).
    """

    def __init__(self, db: Database, *, ttl_s: float = 5.0) -> None:
        self._db = db
        self.ttl_s = ttl_s
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._bans: dict[tuple[int, int | None], BanRow] = {}
        self._terms: dict[int | None, list[_Term]] = {}

    def forget(self) -> None:
        """Reload on the next check (after this process changed a ban or a term)."""
        self._loaded_at = float("-inf")

    async def check_user(self, user_id: int, community_id: int | None, *, now: datetime | None = None) -> None:
        """Refuse a banned user: banned everywhere, or in the community ``community_id``.

        Raises:
            NotAllowed: The user is banned; the message says where, until when and why.
        """
        await self._fresh()
        now = now or utcnow()
        for scope in (None, community_id) if community_id is not None else (None,):
            ban = self._bans.get((user_id, scope))
            if ban is not None and (ban.until is None or ban.until > now):
                where = "from using this bot" if scope is None else "here"
                until = f" until {ban.until:%Y-%m-%d %H:%M} UTC" if ban.until else ""
                why = f" Reason: {ban.reason}." if ban.reason else ""
                raise NotAllowed(f"You are banned {where}{until}.{why}")

    async def check_prompt(self, *texts: str | None, community_id: int | None) -> None:
        """Refuse a prompt (and negative prompt) containing a globally or locally blocked term.

        Raises:
            BadInput: A term matched; the message names it so the person can rephrase.
        """
        await self._fresh()
        scopes: Iterable[int | None] = (None, community_id) if community_id is not None else (None,)
        prompt = normalize(" ".join(t for t in texts if t))
        for scope in scopes:
            for term in self._terms.get(scope, ()):
                if term.pattern.search(prompt):
                    where = "by this community" if scope is not None else "on this bot"
                    raise BadInput(f"Your prompt contains {term.shown}, which is blocked {where}. "
                                   "Please rephrase it; nothing was charged.")

    async def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.ttl_s:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl_s:
                return
            async with self._db.read() as conn:
                bans = await moderation.active_bans(conn, utcnow())
                terms = await moderation.all_terms(conn)
            self._bans = {(b.user_id, b.community_id): b for b in bans}
            self._terms = _compiled(terms)
            self._loaded_at = time.monotonic()


def _compiled(terms: list[TermRow]) -> dict[int | None, list[_Term]]:
    compiled: dict[int | None, list[_Term]] = {}
    for t in terms:
        try:
            matcher = compile_term(t.pattern, t.is_regex)
        except BadInput:
            continue  # stored before a stricter check; /mod blocklist list still shows it
        shown = "words matching a blocked pattern" if t.is_regex else f"“{t.pattern}”"
        compiled.setdefault(t.community_id, []).append(_Term(shown, matcher))
    return compiled
