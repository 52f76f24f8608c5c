"""A stand-in chat platform: an Outbox that records what would have been sent.

It replaces Discord or Telegram (external services), not our own code: the presenter, notifier
and scheduler that call it are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studiobot.commands.contract import ChatRef, Reply


@dataclass
class RecordingOutbox:
    """Keeps every delivered (chat, reply), in order.

    Attributes:
        refuse: When set, each delivery is recorded in ``refused`` and this is raised instead, as a
            platform that keeps answering errors (or, with ``Undeliverable``, one that never will).
    """

    delivered: list[tuple[ChatRef, Reply]] = field(default_factory=list)

    recipients: list[str | None] = field(default_factory=list)
    refuse: Exception | None = None
    refused: list[Reply] = field(default_factory=list)

    async def deliver(self, chat: ChatRef, reply: Reply, *, recipient: str | None = None) -> str | None:
        if self.refuse is not None:
            self.refused.append(reply)
            raise self.refuse
        self.delivered.append((chat, reply))
        self.recipients.append(recipient)
        return f"msg-{len(self.delivered)}"

    def results_for(self, job_id: int) -> list[Reply]:
        """Terminal-state messages for one job (progress messages excluded)."""
        return [
            r for _, r in self.delivered
            if r.data.get("job_id") == job_id and "progress" not in r.data
        ]
