"""The shell adapter: the same commands as Discord and Telegram, typed in a terminal or piped in.

Plain lines without a slash mean ``/imagine``. A command with a secret (``/keys add openai``) asks
for it and takes the next line, not echoed on a terminal and never printed. ``--json`` prints one
JSON object per message for
scripts. Piped input runs like a script: each line's job is delivered before the next line is read,
so ``/imagine`` then ``/gallery`` lists the new image (``wait_each=False`` queues them all at once).
When input ends, it waits until every job started from the shell has been delivered, then returns,
so ``printf '/imagine a red fox\\n' | studiobot run`` prints the result and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, TextIO

from studiobot.commands.contract import ChatRef, Reply, UserRef
from studiobot.commands.dispatcher import Dispatcher
from studiobot.commands.parsing import parse_args, split_command
from studiobot.errors import UserError
from studiobot.db.engine import Database
from studiobot.scheduler import lifecycle

PLATFORM = "shell"
TERMINAL = ChatRef(PLATFORM, "terminal", "dm")


class ShellConsole:
    """Renders Replies to a text stream; also the shell platform's Outbox (results arrive here).

    Args:
        out: Where to write (stdout).
        json_mode: One JSON object per message instead of text.
    """

    def __init__(self, out: TextIO, *, json_mode: bool) -> None:
        self._out = out
        self._json = json_mode

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        """Outbox: print a Reply that arrives later (progress, results)."""
        kind = "progress" if "progress" in reply.data else "result"
        self.show(reply, kind=kind)
        return None

    def show(self, reply: Reply, *, kind: str, command: str = "") -> None:
        """Print one Reply (``kind`` is reply, progress or result)."""
        if self._json:
            record: dict[str, Any] = {"type": kind}
            if command:
                record["command"] = command
            record.update(
                text=reply.text,
                ephemeral=reply.ephemeral,
                images=[str(i.path) for i in reply.images],
                buttons=[{"label": b.label, "action": "/" + b.action} for b in reply.buttons],
                menu=[{"label": o.label, "action": "/" + o.action} for o in reply.menu.options] if reply.menu else [],
                data=reply.data,
            )
            self._out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        else:
            lines = [reply.text]
            lines += [f"  {i.kind}: {i.path}" for i in reply.images]
            if reply.buttons:
                lines.append("  " + "  ".join(f"[{b.label}: /{b.action}]" for b in reply.buttons))
            if reply.menu:
                lines.append(f"  {reply.menu.placeholder}: " + "  ".join(f"/{o.action}" for o in reply.menu.options))
            self._out.write("\n".join(lines) + "\n")
        self._out.flush()


class ShellAdapter:
    """Reads command lines, dispatches them, prints replies.

    Args:
        dispatcher: The core.
        db: Database (to know when every shell job has been delivered).
        console: Output.
        user: Who is typing (``--user``).
        stdin: Input stream.
        wait_each: Wait for each line's job before reading the next (default: when input is piped).
        settle_interval_s: How often to check for outstanding jobs.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        db: Database,
        console: ShellConsole,
        *,
        user: UserRef,
        stdin: TextIO = sys.stdin,
        wait_each: bool | None = None,
        settle_interval_s: float = 0.05,
    ) -> None:
        self._dispatcher = dispatcher
        self._db = db
        self._console = console
        self._user = user
        self._stdin = stdin
        self._wait_each = wait_each
        self._settle = settle_interval_s

    async def run(self) -> None:
        """Serve until input ends (or ``/quit``), then wait for this user's outstanding jobs."""
        interactive = self._stdin.isatty()
        wait_each = not interactive if self._wait_each is None else self._wait_each
        lines = self._lines(interactive)
        async for line in lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text in ("/quit", "/exit", "quit", "exit"):
                break
            if not text.startswith("/"):
                text = "/imagine " + text
            name, reply = await self._run_line(text, lines, interactive)
            self._console.show(reply, kind="reply", command=name)
            job_id = reply.data.get("job_id")
            if wait_each and name == "imagine" and job_id is not None:
                await self._until_delivered(job_id)
        await self._settle_jobs()

    async def _run_line(self, text: str, lines: AsyncIterator[str], interactive: bool) -> tuple[str, Reply]:
        """Dispatch one command line, first reading any secret it needs from the next line."""
        try:
            name, rest = split_command(text)
            spec = self._dispatcher.commands.get(name)
            raw = parse_args(spec, rest) if spec is not None else None
        except UserError:
            spec = raw = None
        if spec is None or raw is None:  # the dispatcher explains what is wrong with the line
            return await self._dispatcher.dispatch_text(self._user, TERMINAL, text, invocation_id=uuid.uuid4().hex)
        missing = [p for p in spec.secrets_for(raw) if p.name not in raw]
        refusal = await self._dispatcher.admit(self._user, TERMINAL, spec.name, raw) if missing else None
        if refusal is not None:  # refused whatever the secret: the next line stays a command
            return spec.name, refusal
        for param in missing:
            print(f"Paste {param.description or param.name} and press Enter"
                  + (" (it is not shown):" if interactive else ":"), file=sys.stderr, flush=True)
            with _no_echo(self._stdin if interactive else None):
                value = await anext(lines, None)
            if interactive:
                print(file=sys.stderr, flush=True)
            raw[param.name] = (value or "").strip()
        reply = await self._dispatcher.dispatch(self._user, TERMINAL, spec.name, raw, uuid.uuid4().hex)
        return spec.name, reply

    async def _until_delivered(self, job_id: int) -> None:
        while not await lifecycle.is_notified(self._db, job_id):
            await asyncio.sleep(self._settle)

    async def _settle_jobs(self) -> None:
        """Wait until this user's jobs are delivered (other people's shells wait for theirs)."""
        me = await self._dispatcher.deps.users.user_id(self._user)
        announced = False
        while (open_jobs := await lifecycle.open_jobs_count(self._db, PLATFORM, me)) > 0:
            if not announced:
                print(f"waiting for {open_jobs} job(s) to finish…", file=sys.stderr, flush=True)
                announced = True
            await asyncio.sleep(self._settle)

    async def _lines(self, interactive: bool) -> AsyncIterator[str]:
        """Lines from stdin, read on a daemon thread so a blocked read never holds up exit."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def pump() -> None:
            try:
                for line in self._stdin:
                    loop.call_soon_threadsafe(queue.put_nowait, line)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name="shell-stdin", daemon=True).start()
        while True:
            if interactive:
                print("studiobot> ", end="", file=sys.stderr, flush=True)
            line = await queue.get()
            if line is None:
                return
            yield line


@contextlib.contextmanager
def _no_echo(stream: TextIO | None) -> Iterator[None]:
    """Turn off a terminal's echo while a secret is typed (nothing to do for pipes)."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal (Windows): the secret is echoed
        yield
        return
    try:
        fd = stream.fileno() if stream is not None else -1
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
