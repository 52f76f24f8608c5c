"""``/mod``: a community's admins keep it safe; in a private chat, the bot's operators act globally.

Every action here lands in the audit log in the same transaction as its effect, naming who acted,
on what, and why. Actions (the first argument):

- ``ban <user> [duration] [reason]``, ``unban <user> [reason]``, ``bans``
- ``blocklist add|remove <term or re:regex>``, ``blocklist list``
- ``limits [per-hour|per-user|community <n or default>]``
- ``nsfw [block|spoiler|age_restricted]``, ``sharing [on|off]``, ``channel [set|clear]``
- ``hide <job> [reason]``, ``unhide <job>``
- ``audit``, ``stats [days]``
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from studiobot.commands.admin import find_user
from studiobot.commands.communities import LIMITS, NSFW_POLICIES, CommunityPolicy
from studiobot.commands.contract import Button, ChatRef, ImageRef, Invocation, Param, Reply
from studiobot.commands.deps import Deps
from studiobot.commands.guards import compile_term, parse_term
from studiobot.commands.parsing import small_number
from studiobot.commands.stats import usage_report
from studiobot.db import gallery as db_gallery
from studiobot.db import moderation
from studiobot.db.models import utcnow
from studiobot.db.moderation import Actor
from studiobot.errors import BadInput, NotAllowed, NotFound
from studiobot.scheduler import lifecycle

ACTIONS = ("ban", "unban", "bans", "blocklist", "limits", "nsfw", "sharing", "channel", "hide", "unhide",
           "audit", "stats")
PARAMS = (
    Param("action", str, "What to do", required=True, positional=True, choices=ACTIONS),
    Param("target", str, "Who or what: a user (@mention, platform:id, #number), a job, add/remove/list, "
          "a policy or a limit", positional=True, max_value=200),
    Param("details", str, "The rest: duration and reason, a term, a number", rest=True, max_value=300),
    Param("before", int, "Audit entries older than this one (the Older button)", min_value=1),
)
_DURATION = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
AUDIT_PAGE = 15
MAX_STATS_DAYS = 366


async def mod(inv: Invocation, deps: Deps) -> Reply:
    """Run one moderation action in this community (or globally, for operators in private)."""
    community = await deps.communities.of_chat(inv.chat)
    if community is None and not inv.is_operator:
        raise NotAllowed("/mod works in a server or group you administer.")
    actor = Actor(f"{inv.user.platform}:{inv.user.platform_user_id}", community.id if community else None)
    action = inv.args["action"]
    target = (inv.args.get("target") or "").strip()
    details = (inv.args.get("details") or "").strip()
    handler = _HANDLERS[action]
    return await handler(inv, deps, community, actor, target, details)


async def _ban(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
               target: str, details: str) -> Reply:
    if not target:
        raise BadInput("Say who: /mod ban @user [duration like 3d] [reason].")
    user_id, shown = await find_user(deps.db, target, platform=inv.chat.platform)
    if user_id == await deps.users.user_id(inv.user):
        raise BadInput("You cannot ban yourself.")
    duration, reason = _duration(details)
    until = utcnow() + duration if duration else None
    await deps.db.run(moderation.ban, actor, user_id, shown, until, reason)
    deps.guards.forget()
    where = "here" if community else "everywhere"
    how_long = f" for {_spell(duration)}" if duration else " until unbanned"
    return Reply(text=f"Banned {shown} {where}{how_long}." + (f" Reason: {reason}." if reason else ""),
                 ephemeral=True, data={"banned": shown, "until": until.isoformat() if until else None})


async def _unban(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                 target: str, details: str) -> Reply:
    if not target:
        raise BadInput("Say who: /mod unban @user [reason].")
    user_id, shown = await find_user(deps.db, target, platform=inv.chat.platform)
    lifted = await deps.db.run(moderation.unban, actor, user_id, shown, details)
    deps.guards.forget()
    if not lifted:
        raise NotFound(f"{shown} is not banned {'here' if community else 'globally'}.")
    return Reply(text=f"Lifted the ban on {shown}.", ephemeral=True, data={"unbanned": shown})


async def _bans(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                target: str, details: str) -> Reply:
    async with deps.db.read() as conn:
        bans = await moderation.bans_in(conn, actor.community_id, utcnow())
    if not bans:
        return Reply(text="Nobody is banned here." if community else "Nobody is banned globally.",
                     ephemeral=True, data={"bans": []})
    lines = ["Banned:"] + [
        f"  user #{b.user_id} " + (f"until {b.until:%Y-%m-%d %H:%M} UTC" if b.until else "until unbanned")
        + (f": {b.reason}" if b.reason else "") for b in bans
    ]
    return Reply(text="\n".join(lines), ephemeral=True, data={"bans": [b.user_id for b in bans]})


async def _blocklist(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                     target: str, details: str) -> Reply:
    verb = target.lower() or "list"
    scope = "this community's" if community else "the global"
    if verb == "list":
        async with deps.db.read() as conn:
            terms = await moderation.terms_in(conn, actor.community_id)
        if not terms:
            return Reply(text=f"{scope.capitalize()} blocklist is empty.", ephemeral=True, data={"terms": []})
        shown = [f"re:{t.pattern}" if t.is_regex else t.pattern for t in terms]
        return Reply(text=f"{scope.capitalize()} blocklist:\n" + "\n".join(f"  {t}" for t in shown),
                     ephemeral=True, data={"terms": shown})
    if verb not in ("add", "remove"):
        raise BadInput("Use /mod blocklist add <term>, /mod blocklist remove <term> or /mod blocklist list. "
                       "A term starting with re: is a regular expression (RE2 syntax).")
    pattern, is_regex = parse_term(details)
    compile_term(pattern, is_regex)  # refuses empty, long and broken patterns before storing
    if verb == "add":
        added = await deps.db.run(moderation.add_term, actor, pattern, is_regex)
        text = f"Blocked “{details}” in {scope} blocklist." if added else f"“{details}” was already blocked."
    else:
        removed = await deps.db.run(moderation.remove_term, actor, pattern, is_regex)
        if not removed:
            raise NotFound(f"“{details}” is not in {scope} blocklist.")
        text = f"Unblocked “{details}”."
    deps.guards.forget()
    return Reply(text=text, ephemeral=True, data={"term": details, "action": verb})


async def _limits(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                  target: str, details: str) -> Reply:
    policy = _needs_community(community, "limits")
    if target:
        if target not in LIMITS:
            raise BadInput(f"The limits are {', '.join(LIMITS)}: /mod limits per-hour 20 (or default).")
        value = None if details.lower() == "default" else small_number(details)
        if value is None and details.lower() != "default":
            if details.isascii() and details.isdigit():  # too many digits to be a limit
                raise BadInput(f"That limit must be between 1 and the operator's: /mod limits {target} 10.")
            raise BadInput(f"Give a number or default: /mod limits {target} 10.")
        policy = await deps.communities.change(policy.id, **{LIMITS[target]: value})
        await deps.db.run(moderation.audit, actor, "limits", target, details)
    text = (f"Limits here: {policy.max_jobs_per_hour} jobs per user per hour, {policy.max_active_per_user} "
            f"in progress per user, {policy.max_active} in progress for the whole community. "
            f"The operator's ceilings: {deps.settings.max_jobs_per_hour}, {deps.settings.max_active_jobs_per_user}, "
            f"{deps.settings.max_active_jobs_per_community}.")
    return Reply(text=text, ephemeral=True, data={"per-hour": policy.max_jobs_per_hour,
                                                  "per-user": policy.max_active_per_user,
                                                  "community": policy.max_active})


async def _nsfw(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                target: str, details: str) -> Reply:
    policy = _needs_community(community, "nsfw")
    if target:
        choice = target.lower().replace("-", "_")
        if choice not in NSFW_POLICIES:
            raise BadInput(f"The NSFW policy is one of {', '.join(NSFW_POLICIES)}.")
        policy = await deps.communities.change(policy.id, nsfw=choice)
        await deps.db.run(moderation.audit, actor, "nsfw", choice, details)
    meaning = {"block": "withheld", "spoiler": "shown behind a spoiler",
               "age_restricted": "shown only in age-restricted channels"}[policy.nsfw]
    return Reply(text=f"NSFW policy here: {policy.nsfw}. Images a provider flags as NSFW are {meaning}.",
                 ephemeral=True, data={"nsfw": policy.nsfw})


async def _sharing(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                   target: str, details: str) -> Reply:
    policy = _needs_community(community, "sharing")
    if target:
        if target.lower() not in ("on", "off"):
            raise BadInput("Use /mod sharing on or /mod sharing off.")
        policy = await deps.communities.change(policy.id, share_by_default=target.lower() == "on")
        await deps.db.run(moderation.audit, actor, "sharing", target.lower(), details)
    text = ("Images made here go to the community gallery unless their authors make them private."
            if policy.share_by_default else
            "Images made here stay private unless their authors share them.")
    return Reply(text=text, ephemeral=True, data={"share_by_default": policy.share_by_default})


async def _channel(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                   target: str, details: str) -> Reply:
    policy = _needs_community(community, "channel")
    verb = target.lower()
    if verb == "set":
        here = ChatRef(inv.chat.platform, inv.chat.chat_id, inv.chat.kind, inv.chat.community_id,
                       thread_id=inv.chat.thread_id, age_restricted=inv.chat.age_restricted)
        policy = await deps.communities.change(policy.id, gallery_channel=here.to_dict())
        await deps.db.run(moderation.audit, actor, "channel set", _where(here), details)
    elif verb == "clear":
        policy = await deps.communities.change(policy.id, gallery_channel=None)
        await deps.db.run(moderation.audit, actor, "channel clear", "", details)
    elif verb:
        raise BadInput("Use /mod channel set (in the channel or topic to post to) or /mod channel clear.")
    channel = policy.channel
    text = (f"Shared images are posted to {_where(channel)}." if channel else
            "There is no gallery channel: run /mod channel set in the channel or topic to post shared images to.")
    return Reply(text=text, ephemeral=True, data={"gallery_channel": policy.gallery_channel})


async def _hide(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                target: str, details: str, *, hidden: bool = True) -> Reply:
    policy = _needs_community(community, "hide" if hidden else "unhide")
    if not target.lstrip("#").isdigit():
        raise BadInput(f"Say which job: /mod {'hide' if hidden else 'unhide'} <job number> [reason].")
    job_id = int(target.lstrip("#"))
    async with deps.db.read() as conn:
        job = await lifecycle.get(conn, job_id)
    changed = await deps.db.run(db_gallery.set_hidden, job_id, policy.id, hidden) if job else 0
    if not changed:
        raise NotFound(f"Job #{job_id} has no {'shown' if hidden else 'hidden'} images in this community's gallery.")
    await deps.db.run(moderation.audit, actor, "hide" if hidden else "unhide", f"job #{job_id}", details)
    verb = "Hid" if hidden else "Showed again"
    return Reply(text=f"{verb} {changed} image{'s' if changed != 1 else ''} of job #{job_id} "
                 f"{'from' if hidden else 'in'} this community's gallery.",
                 ephemeral=True, data={"job_id": job_id, "hidden": hidden, "changed": changed})


async def _unhide(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                  target: str, details: str) -> Reply:
    return await _hide(inv, deps, community, actor, target, details, hidden=False)


async def _audit(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                 target: str, details: str) -> Reply:
    async with deps.db.read() as conn:
        entries = await moderation.audit_page(conn, actor.community_id, before=inv.args.get("before"),
                                              limit=AUDIT_PAGE + 1)
    more, entries = len(entries) > AUDIT_PAGE, list(entries[:AUDIT_PAGE])
    if not entries:
        return Reply(text="The audit log is empty.", ephemeral=True, data={"entries": []})
    lines = ["Audit log (newest first):"] + [
        f"  {e.created_at:%Y-%m-%d %H:%M} {e.actor} {e.action}" + (f" {e.target}" if e.target else "")
        + (f" — {e.reason}" if e.reason else "") for e in entries
    ]
    buttons = [Button("Older ▶", f"mod audit --before {entries[-1].id}")] if more else []
    data: dict[str, Any] = {"entries": [{"id": e.id, "actor": e.actor, "action": e.action, "target": e.target,
                                         "reason": e.reason, "at": e.created_at.isoformat()} for e in entries]}
    return Reply(text="\n".join(lines), buttons=buttons, ephemeral=True,
                 replaces_source=inv.args.get("before") is not None, data=data)


async def _stats(inv: Invocation, deps: Deps, community: CommunityPolicy | None, actor: Actor,
                 target: str, details: str) -> Reply:
    days = small_number(target) if target else 30
    if days is None or not 1 <= days <= MAX_STATS_DAYS:
        raise BadInput(f"Stats cover 1 to {MAX_STATS_DAYS} days: /mod stats 30.")
    title = "This community" if community else "The whole bot"
    report = await usage_report(deps.db, actor.community_id, days=days, title=title)
    stored = deps.store.put(report.chart, "png")
    usage = report.usage
    return Reply(
        text=report.text, images=[ImageRef(stored.path, "chart", f"{title}: usage", stored.key)], ephemeral=True,
        data={"days": days, "jobs": usage.jobs, "succeeded": usage.succeeded, "failed": usage.failed,
              "credits": usage.credits, "providers": dict(usage.providers), "chart": str(stored.path)},
    )


_HANDLERS = {
    "ban": _ban, "unban": _unban, "bans": _bans, "blocklist": _blocklist, "limits": _limits, "nsfw": _nsfw,
    "sharing": _sharing, "channel": _channel, "hide": _hide, "unhide": _unhide, "audit": _audit, "stats": _stats,
}


def _needs_community(community: CommunityPolicy | None, action: str) -> CommunityPolicy:
    if community is None:
        raise BadInput(f"/mod {action} is a community setting: use it in the server or group.")
    return community


def _duration(details: str) -> tuple[timedelta | None, str]:
    """``3d spamming`` -> (3 days, "spamming"); no duration -> (None, everything)."""
    first, _, rest = details.partition(" ")
    match = _DURATION.match(first)
    if not match:
        return None, details
    amount = int(match.group(1))
    if amount == 0:
        raise BadInput("A ban lasts at least one minute; leave the duration out to ban until unbanned.")
    return timedelta(**{_UNITS[match.group(2)]: amount}), rest.strip()


def _spell(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return str(duration)


def _where(chat: ChatRef | None) -> str:
    if chat is None:
        return "nowhere"
    topic = f" topic {chat.thread_id}" if chat.thread_id else ""
    return f"{chat.platform} channel {chat.chat_id}{topic}"
