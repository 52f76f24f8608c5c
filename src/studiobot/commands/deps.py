"""What handlers may use: built once by the composition root and passed to every handler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from studiobot.billing.service import Billing
from studiobot.commands.communities import Communities
from studiobot.commands.contract import Outbox
from studiobot.commands.guards import Guards
from studiobot.commands.users import UserDirectory
from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.media.store import LocalStore
from studiobot.providers.router import Router
from studiobot.scheduler.keys import Keyring
from studiobot.vault.store import Vault


@dataclass(frozen=True, slots=True)
class Deps:
    """Handler dependencies.

    Attributes:
        db: Database.
        router: Providers and keys.
        settings: Configuration.
        store: Image store (to turn asset keys into files).
        users: Identity to user id resolution (creating users with welcome credits).
        keys: Each job's key (to cancel a running task at its provider).
        communities: Community settings (sharing, NSFW policy, gallery channel, limits).
        guards: Bans and blocklists.
        job_queued: Called after a job is queued, to wake the worker now.
        billing: Purchases (the catalogue, Stripe Checkout), or None where nothing is sold.
        vault: Users' own provider keys, or None where personal keys are disabled.
        outboxes: One per platform this process can post to (gallery channels).
    """

    db: Database
    router: Router
    settings: Settings
    store: LocalStore
    users: UserDirectory
    keys: Keyring
    communities: Communities
    guards: Guards
    job_queued: Callable[[], None] = lambda: None
    billing: Billing | None = None
    vault: Vault | None = None
    outboxes: Mapping[str, Outbox] = field(default_factory=dict)
