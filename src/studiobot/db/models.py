"""SQLAlchemy 2 models: the tables of DESIGN.md section 4 that exist so far.

The schema is made only by Alembic migrations (``db/migrations``); these classes describe it for
queries. Queries run as Core statements on connections (see ``db/engine.py``), which keeps the hot
paths (accepting a job, claiming work) to a few cheap round trips.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Boolean,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so migrations can refer to them on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every database.

    SQLite has no time zones, so values are stored as naive UTC and come back tagged UTC; PostgreSQL
    stores ``timestamptz``. Naive values passed in are refused: they are always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with the project's naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person, whatever platforms they use (they may have several identities)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    #: Settings the user chose with /settings, e.g. ``{"originals": true}``.
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Identity(Base):
    """A platform account (``platform``, ``platform_user_id``) mapped to one user."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Community(Base):
    """A Discord guild or Telegram group, with its settings as JSON."""

    __tablename__ = "communities"
    __table_args__ = (UniqueConstraint("platform", "platform_community_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_community_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100), default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditAccount(Base):
    """A user's balance: a cache of the sum of their entries, updated in the same transaction."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("owed >= 0", name="owed_not_negative"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Credits clawed back by a refund or dispute that the balance could not cover (the ``debt``
    #: policy); repaid from the next credits the user receives, before they can spend again.
    owed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: When the user's last pass ends: reservations look for a pass only while this is ahead.
    pass_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditEntry(Base):
    """An append-only ledger entry. ``amount`` is signed; ``balance_after`` is the balance it left.

    ``kind`` is one of grant | purchase | reserve | capture | refund | adjustment | pass | clawback |
    repay. A capture moves no credits (amount 0): it records that the reservation was spent.
    ``idempotency_key`` is unique, which is what makes every ledger operation safe to repeat.
    ``order_id`` ties purchases and clawbacks to their order; ``actor`` names who made a manual
    adjustment (an operator's platform:user id).
    """

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A generation job and its lifecycle (DESIGN.md section 3).

    ``status``: queued -> running -> succeeded | failed | cancelled. ``due_at`` is when the scheduler
    next acts on the job: the earliest claim of a queued job (retry backoff) or the next poll of a
    running asynchronous one. ``lease_owner``/``lease_expires_at`` mark the worker holding it.
    ``notified_at`` is set once the user was told of the terminal state (the outbox sweep delivers
    any terminal job still lacking it, e.g. after a crash).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_due_at", "status", "due_at"),
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_jobs_user_id_status", "user_id", "status"),
        Index("ix_jobs_origin_platform_notified_at", "origin_platform", "notified_at"),
        Index("ix_jobs_community_id_created_at", "community_id", "created_at"),
        Index("ix_jobs_community_id_status", "community_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="image")
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    key_source: Mapped[str] = mapped_column(String(16), default="platform")
    cost: Mapped[int] = mapped_column(Integer, default=0)
    #: The part of ``cost`` drawn from a pass (the rest came from the balance).
    pass_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pass_credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The user's own key that pays (``key_source == "user"``); None when the platform pays.
    api_key_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Unguessable token in the URL an asynchronous provider calls back on (per job).
    webhook_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    provider_task_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    progress: Mapped[float | None] = mapped_column(nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    origin_platform: Mapped[str] = mapped_column(String(16))
    origin_chat: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The server or group it was made in (None in a private chat): its images' default gallery,
    #: its concurrency limit and its usage figures.
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="SET NULL"), nullable=True
    )
    origin_message: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Failed deliveries of the terminal state; the sweep tries again from ``delivery_due_at``.
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivery_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobEvent(Base):
    """What happened to a job, in order: queued, claimed, submitted, retry, succeeded, failed..."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Asset(Base):
    """A stored image: content-addressed file, thumbnail, owner and visibility.

    ``kind`` is image | grid. ``position`` orders a job's images (1-4; 0 for the grid).
    ``visibility`` is private (the owner only), community (the gallery of ``community_id``) or
    public (also the web gallery). ``hidden`` is set by a community admin: the image leaves every
    gallery but its owner's, whatever its visibility. ``nsfw`` is the provider's safety flag (None
    when the provider gives none).
    """

    __tablename__ = "assets"
    __table_args__ = (
        Index("ix_assets_owner_id_id", "owner_id", "id"),
        Index("ix_assets_community_id_visibility_id", "community_id", "visibility", "id"),
        Index("ix_assets_visibility_id", "visibility", "id"),
        # Files are shared by content: releasing one asks whether any asset still names it.
        Index("ix_assets_storage_key", "storage_key"),
        Index("ix_assets_thumbnail_key", "thumbnail_key"),
        UniqueConstraint("job_id", "kind", "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="image")
    position: Mapped[int] = mapped_column(Integer, default=1)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(200))
    thumbnail_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="SET NULL"), nullable=True
    )
    nsfw: Mapped[bool | None] = mapped_column(nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Favorite(Base):
    """A user's favourite image (any image they can see, not only their own)."""

    __tablename__ = "favorites"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlatformState(Base):
    """Small facts an adapter must remember across restarts and processes.

    For example the hash of the Discord command set last synced, so a restart does not re-create
    commands (Discord limits daily command creates).
    """

    __tablename__ = "platform_state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlatformFile(Base):
    """A stored image the platform already holds, by the platform's own file id.

    Telegram answers an upload with a ``file_id`` that can be sent again without uploading, and
    that inline mode needs (``InlineQueryResultCachedPhoto``).
    """

    __tablename__ = "platform_files"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SeenUpdate(Base):
    """A platform update already handled (Telegram ``update_id``), so redeliveries are dropped."""

    __tablename__ = "seen_updates"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CreditPass(Base):
    """A time-boxed plan: ``credits_per_window`` credits every ``window_s`` seconds until ``expires_at``.

    Windows are counted from ``starts_at``; ``used`` counts the credits drawn in window number
    ``window_no`` (a draw in a later window starts the count again). Reservations draw from an
    active pass before the balance.
    """

    __tablename__ = "passes"
    __table_args__ = (Index("ix_passes_user_id_expires_at", "user_id", "expires_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    order_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    plan: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(100))
    credits_per_window: Mapped[int] = mapped_column(Integer)
    window_s: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    window_no: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Order(Base):
    """A purchase of a credit pack or a pass through a Stripe Checkout Session.

    What was bought (``kind``, ``product_id``, ``label``, ``credits``, the pass's window and
    duration, ``amount`` in the currency's minor units) is copied from the catalogue when the order
    is made, so later catalogue changes never change an order. ``status``: pending (no session yet)
    -> open -> awaiting_payment (delayed payment methods) -> paid | failed | expired; a paid order
    may become refunded or disputed. ``credits_clawed`` counts what refunds and disputes took back.
    """

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    product_id: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(100))
    credits: Mapped[int] = mapped_column(Integer)
    pass_window_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pass_duration_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Which attempt at a Checkout Session the order is on: part of its Stripe idempotency key,
    #: moved on after a failed attempt because Stripe replays a stored failure for 24 hours.
    checkout_attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_clawed: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(String(200), default="")
    origin_platform: Mapped[str] = mapped_column(String(16))
    origin_chat: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StripeEvent(Base):
    """The inbox of verified Stripe webhook events: stored (by unique id) before anything acts on them.

    ``object`` keeps only the fields fulfilment reads (no customer details). ``processed_at`` stays
    empty until the event's effect is committed; a refund or dispute that arrives before its order
    was paid waits here (matched by ``payment_intent`` or ``order_id``) and is applied with the
    fulfilment.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    payment_intent: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    object: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(200), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")


class ApiKey(Base):
    """A user's own provider key, encrypted (DESIGN.md section 4, reference rules section 5).

    ``ciphertext`` is a Fernet token under the newest master key; ``fingerprint`` an HMAC-SHA256 of
    the key under a key derived from the master key (to notice the same key added twice without
    storing anything that reveals it); ``hint`` its last four characters, the only part ever shown.
    ``status`` is ``active`` or ``invalid`` (the provider refused it).
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "fingerprint"),
        Index("ix_api_keys_user_id_provider", "user_id", "provider"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(40), default="")
    ciphertext: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    hint: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Collection(Base):
    """A user's named set of images (``/collection``); names are unique per owner."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CollectionItem(Base):
    """An image in a collection."""

    __tablename__ = "collection_items"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Vote(Base):
    """One person's vote for a shared image; a week of votes ranks the community's "top"."""

    __tablename__ = "votes"
    __table_args__ = (Index("ix_votes_created_at", "created_at"),)

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ban(Base):
    """A user banned from one community, or everywhere (``community_id`` None, operators only).

    ``until`` None means until lifted with ``/mod unban``.
    """

    __tablename__ = "bans"
    __table_args__ = (Index("ix_bans_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), nullable=True
    )
    until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlockedTerm(Base):
    """A word, phrase or RE2 regular expression refused in prompts, in one community or everywhere."""

    __tablename__ = "blocked_terms"
    __table_args__ = (Index("ix_blocked_terms_community_id", "community_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), nullable=True
    )
    pattern: Mapped[str] = mapped_column(String(200))
    is_regex: Mapped[bool] = mapped_column(Boolean, default=False)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """One moderation or admin action: who, what, to whom, why and when (append-only).

    ``community_id`` None marks an operator's global action.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_community_id_id", "community_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    community_id: Mapped[int | None] = mapped_column(
        ForeignKey("communities.id", ondelete="SET NULL"), nullable=True
    )
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
