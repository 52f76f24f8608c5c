"""Which key a job calls its provider with, and what happens when a provider refuses a user's key.

A job records ``key_source``: ``platform`` (the operator's key from settings; credits charged) or
``user`` (the user's own stored key, ``api_key_id``; no credits). Everything that talks to a
provider about a job (worker, poller, recovery, cancel, webhooks) asks here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from studiobot.providers.base import ProviderKey
from studiobot.providers.errors import AuthError
from studiobot.providers.router import Router
from studiobot.scheduler.lifecycle import JobRow
from studiobot.vault.store import INVALID, KeyUnreadable, Vault

log = logging.getLogger(__name__)

#: Tells a user something privately: (job, text). Built by the composition root from the outboxes.
TellUser = Callable[[JobRow, str], Awaitable[None]]


class Keyring:
    """Resolves jobs' keys.

    Args:
        router: The platform keys.
        vault: Users' stored keys, or None where personal keys are disabled.
        tell_user: Sends a private notice to a job's user (a refused key).
    """

    def __init__(self, router: Router, vault: Vault | None, tell_user: TellUser | None = None) -> None:
        self._router = router
        self._vault = vault
        self._tell = tell_user

    async def for_job(self, job: JobRow, *, using: bool = False) -> ProviderKey | None:
        """The key to call ``job.provider`` with for ``job``.

        Args:
            job: The job.
            using: True when the call starts paid work (a submission): the key's ``last_used_at``
                is updated.

        Returns:
            The key, or None when the provider needs none.

        Raises:
            AuthError: The user's key was removed, or cannot be read (the job fails; nothing was
                charged for it).
        """
        if job.key_source != "user":
            return self._router.platform_key(job.provider)
        if self._vault is None or job.api_key_id is None:
            raise AuthError("user key unavailable", user_message=_GONE)
        try:
            key = await self._vault.provider_key(job.api_key_id)
        except KeyUnreadable:
            log.error("job %s: stored key #%s does not open with the master keys", job.id, job.api_key_id)
            raise AuthError("user key unreadable", user_message=_GONE) from None
        if key is None:
            raise AuthError("user key removed", user_message=_GONE)
        if using:
            await self._vault.touch(job.api_key_id)
        return key

    async def refused(self, job: JobRow) -> None:
        """The provider answered 401/403 for ``job``'s key: mark a user's key invalid and tell them.

        A platform key refused is the operator's problem: it is logged, not stored.
        """
        if job.key_source != "user" or self._vault is None or job.api_key_id is None:
            log.error("job %s: the platform key for %s was refused", job.id, job.provider)
            return
        if await self._vault.mark(job.api_key_id, INVALID) and self._tell is not None:
            await self._tell(job, (
                f"{job.provider} refused your API key, so I marked it invalid and stopped using it. "
                f"Check it with /keys test {job.provider}, or replace it with /keys add {job.provider} "
                "in a private chat with me."
            ))


_GONE = "Your API key for this provider was removed or can no longer be read; add it again with /keys."
