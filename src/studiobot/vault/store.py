"""The ``api_keys`` table: add, list, remove, check and rotate users' own provider keys.

Only :class:`Vault` sees plaintext keys, and only in memory for the call that needs them; rows
hold a Fernet token, a keyed fingerprint and a four-character hint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import InvalidToken
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from studiobot.db.engine import Database
from studiobot.db.models import ApiKey, utcnow
from studiobot.providers.base import ProviderKey
from studiobot.vault.cipher import KeyCipher, MasterKeyError, hint

log = logging.getLogger(__name__)

ACTIVE = "active"
INVALID = "invalid"
_PUBLIC = (ApiKey.id, ApiKey.user_id, ApiKey.provider, ApiKey.label, ApiKey.hint, ApiKey.status,
           ApiKey.created_at, ApiKey.last_used_at, ApiKey.checked_at)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What may be known about a stored key without decrypting it."""

    id: int
    user_id: int
    provider: str
    label: str
    hint: str
    status: str
    created_at: datetime
    last_used_at: datetime | None
    checked_at: datetime | None


class DuplicateKey(Exception):
    """The user already stored this key (``existing`` is that row)."""

    def __init__(self, existing: StoredKey) -> None:
        super().__init__(f"key already stored as #{existing.id}")
        self.existing = existing


class KeyUnreadable(Exception):
    """A stored key no configured master key opens (it was removed before rotation finished)."""


class Vault:
    """Users' provider keys, encrypted at rest.

    Args:
        db: Database.
        cipher: Encryption under the configured master keys.
    """

    def __init__(self, db: Database, cipher: KeyCipher) -> None:
        self._db = db
        self._cipher = cipher

    @property
    def master_key_count(self) -> int:
        """How many master keys are configured."""
        return self._cipher.key_count

    async def add(self, user_id: int, provider: str, secret: str, label: str = "") -> StoredKey:
        """Store ``secret`` for ``user_id``'s use of ``provider`` (already checked by the caller).

        Raises:
            DuplicateKey: The user stored this very key before (under any label or provider).
        """
        prints = self._cipher.fingerprints(secret)
        row = dict(user_id=user_id, provider=provider, label=label, ciphertext=self._cipher.encrypt(secret),
                   fingerprint=prints[0], hint=hint(secret), status=ACTIVE, created_at=utcnow(),
                   checked_at=utcnow())

        def tx(conn: Connection) -> StoredKey:
            existing = conn.execute(
                select(*_PUBLIC).where(ApiKey.user_id == user_id, ApiKey.fingerprint.in_(prints))
            ).first()
            if existing is not None:
                raise DuplicateKey(StoredKey(*existing))
            key_id = conn.execute(insert(ApiKey).values(**row).returning(ApiKey.id)).scalar_one()
            return StoredKey(key_id, user_id, provider, label, row["hint"], ACTIVE, row["created_at"], None,
                             row["checked_at"])

        try:
            return await self._db.run(tx)
        except IntegrityError:  # a concurrent add of the same key won the race
            async with self._db.read() as conn:
                existing = (await conn.execute(
                    select(*_PUBLIC).where(ApiKey.user_id == user_id, ApiKey.fingerprint.in_(prints))
                )).one()
            raise DuplicateKey(StoredKey(*existing)) from None

    async def keys_of(self, user_id: int) -> list[StoredKey]:
        """The user's keys, by provider then newest first."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(*_PUBLIC).where(ApiKey.user_id == user_id)
                .order_by(ApiKey.provider, ApiKey.created_at.desc(), ApiKey.id.desc())
            )
            return [StoredKey(*row) for row in rows]

    async def active_key(self, user_id: int, provider: str) -> StoredKey | None:
        """The key a new job for ``provider`` uses: the user's newest active one, if any."""
        async with self._db.read() as conn:
            row = (await conn.execute(
                select(*_PUBLIC)
                .where(ApiKey.user_id == user_id, ApiKey.provider == provider, ApiKey.status == ACTIVE)
                .order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(1)
            )).first()
        return StoredKey(*row) if row is not None else None

    async def remove(self, user_id: int, key_id: int) -> bool:
        """Delete the user's key ``key_id`` (the ciphertext goes with it). False if not theirs."""

        def tx(conn: Connection) -> bool:
            result = conn.execute(delete(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))
            return bool(result.rowcount)

        return await self._db.run(tx)

    async def provider_key(self, key_id: int) -> ProviderKey | None:
        """The decrypted key ``key_id`` for one provider call, or None when it was removed.

        Raises:
            KeyUnreadable: No configured master key opens it.
        """
        async with self._db.read() as conn:
            token = (await conn.execute(select(ApiKey.ciphertext).where(ApiKey.id == key_id))).scalar()
        if token is None:
            return None
        try:
            return ProviderKey(secret=self._cipher.decrypt(token), source="user")
        except InvalidToken:
            raise KeyUnreadable(f"api key #{key_id} does not open with the configured master keys") from None

    async def mark(self, key_id: int, status: str) -> bool:
        """Record the outcome of a check (``active`` or ``invalid``). True when the status changed."""

        def tx(conn: Connection) -> bool:
            before = conn.execute(select(ApiKey.status).where(ApiKey.id == key_id)).scalar()
            conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(status=status, checked_at=utcnow()))
            return before is not None and before != status

        return await self._db.run(tx)

    async def touch(self, key_id: int) -> None:
        """Note that a job just used key ``key_id``."""

        def tx(conn: Connection) -> None:
            conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))

        await self._db.run(tx)

    async def verify_master_keys(self) -> None:
        """Refuse to start when the configured master keys do not open the stored keys.

        The newest and the oldest rows are tried: a wrong key fails on both, and a key dropped
        before rotation finished fails on the oldest.

        Raises:
            MasterKeyError: With what to do about it. Nothing is changed or lost.
        """
        async with self._db.read() as conn:
            newest = (await conn.execute(select(ApiKey.ciphertext).order_by(ApiKey.id.desc()).limit(1))).scalar()
            oldest = (await conn.execute(select(ApiKey.ciphertext).order_by(ApiKey.id).limit(1))).scalar()
        for token in {t for t in (newest, oldest) if t is not None}:
            try:
                self._cipher.decrypt(token)
            except InvalidToken:
                raise MasterKeyError(
                    "The configured master key does not open the personal API keys stored in this "
                    "database. Start with the master key that stored them (STUDIOBOT_MASTER_KEYS or "
                    "the key file); to change keys, put the new one first and keep the old one until "
                    "`studiobot keys rotate` has finished. Nothing was changed."
                ) from None

    async def rotate(self, batch: int = 200) -> int:
        """Re-encrypt and re-fingerprint every key under the newest master key.

        Rows are done in batches of ``batch``, each in its own transaction, so a large table never
        holds one long lock and an interrupted run simply continues next time.

        Returns:
            How many keys were re-encrypted (all of them; a token already under the newest key
            gets a fresh IV, which is harmless).

        Raises:
            MasterKeyError: A row no configured key opens; the rows before it stay rotated and
                that row stays as it was.
        """
        rotated = 0
        after = 0
        while True:
            async with self._db.read() as conn:
                rows = (await conn.execute(
                    select(ApiKey.id, ApiKey.ciphertext).where(ApiKey.id > after).order_by(ApiKey.id).limit(batch)
                )).all()
            if not rows:
                return rotated
            changes = []
            for key_id, token in rows:
                try:
                    secret = self._cipher.decrypt(token)
                except InvalidToken:
                    raise MasterKeyError(
                        f"Stored key #{key_id} does not open with any configured master key; add the "
                        "master key that stored it (after the new one) and run rotate again."
                    ) from None
                changes.append({"key_id": key_id, "token": self._cipher.rotate(token),
                                "print": self._cipher.fingerprint(secret)})

            def tx(conn: Connection, changes: list[dict[str, object]] = changes) -> None:
                for change in changes:
                    conn.execute(update(ApiKey).where(ApiKey.id == change["key_id"])
                                 .values(ciphertext=change["token"], fingerprint=change["print"]))

            await self._db.run(tx)
            rotated += len(changes)
            after = rows[-1][0]
