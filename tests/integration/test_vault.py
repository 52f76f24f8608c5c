"""The key vault on real SQLite and PostgreSQL: rotation at scale, and the master key guard."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import insert, select

from studiobot.db import users
from studiobot.db.engine import Database
from studiobot.db.models import ApiKey, utcnow
from studiobot.vault import masterkeys
from studiobot.vault.cipher import KeyCipher, MasterKeyError, hint, new_master_key
from studiobot.vault.store import DuplicateKey, Vault

KEYS = 1000


def secret(n: int) -> str:
    return f"sk-proj-RotationTest{n:06d}abcdefghijklmnopqrstu"


async def fill(db: Database, cipher: KeyCipher, count: int) -> int:
    """One user with ``count`` distinct keys, inserted in one transaction (the vault's own
    ``add`` is exercised elsewhere; here the table just needs to be big)."""
    user_id = await db.run(users.create_user, "shell", "ada", "ada")
    rows = [dict(user_id=user_id, provider="openai", label=f"k{n}", ciphertext=cipher.encrypt(secret(n)),
                 fingerprint=cipher.fingerprint(secret(n)), hint=hint(secret(n)), status="active",
                 created_at=utcnow()) for n in range(count)]
    await db.run(lambda conn: conn.execute(insert(ApiKey), rows))
    return user_id


async def test_rotating_a_thousand_keys_loses_nothing(db: Database) -> None:
    old, new = new_master_key(), new_master_key()
    user_id = await fill(db, KeyCipher([old]), KEYS)
    vault = Vault(db, KeyCipher([new, old]))
    await vault.verify_master_keys()  # the old key still opens everything
    assert await vault.rotate(batch=128) == KEYS
    # Only the new master key is needed now, for every row, and every fingerprint moved with it.
    only_new = Vault(db, KeyCipher([new]))
    await only_new.verify_master_keys()
    async with db.read() as conn:
        ids = [row.id for row in await conn.execute(select(ApiKey.id).order_by(ApiKey.id))]
    plain = await asyncio.gather(*(only_new.provider_key(i) for i in ids))
    assert [key.secret for key in plain if key] == [secret(n) for n in range(KEYS)]
    try:
        await only_new.add(user_id, "openai", secret(7))
    except DuplicateKey as duplicate:
        assert duplicate.existing.label == "k7"
    else:
        raise AssertionError("a rotated key was not recognised as a duplicate")
    try:
        await Vault(db, KeyCipher([old])).verify_master_keys()
    except MasterKeyError:
        pass
    else:
        raise AssertionError("the retired master key still opened rotated keys")


async def test_a_wrong_master_key_refuses_to_start_and_changes_nothing(db: Database) -> None:
    right = new_master_key()
    await fill(db, KeyCipher([right]), 3)
    async with db.read() as conn:
        before = (await conn.execute(select(ApiKey.ciphertext).order_by(ApiKey.id))).scalars().all()
    wrong = Vault(db, KeyCipher([new_master_key()]))
    try:
        await wrong.verify_master_keys()
    except MasterKeyError as error:
        assert "does not open the personal API keys" in error.message
    else:
        raise AssertionError("a wrong master key was accepted")
    try:
        await wrong.rotate()
    except MasterKeyError as error:
        assert "does not open with any configured master key" in error.message
    else:
        raise AssertionError("rotation went ahead under a wrong key")
    async with db.read() as conn:
        after = (await conn.execute(select(ApiKey.ciphertext).order_by(ApiKey.id))).scalars().all()
    assert after == before


def test_keys_rotate_command_with_a_new_master_key(tmp_path: Path, database_url: str) -> None:
    """``studiobot keys rotate --new-master-key`` in a real process, key file mode."""
    key_file = tmp_path / "master.key"
    first = new_master_key()
    masterkeys.write(key_file, [first])

    async def seed() -> None:
        db = Database(database_url)
        from studiobot.db.migrate import upgrade

        await upgrade(db)
        try:
            await fill(db, KeyCipher([first]), 25)
        finally:
            await db.dispose()

    asyncio.run(seed())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIOBOT_")}
    env.update(STUDIOBOT_DATABASE_URL=database_url, STUDIOBOT_MASTER_KEY_FILE=str(key_file),
               STUDIOBOT_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-m", "studiobot", "keys", "rotate", "--new-master-key"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 25 stored keys under the newest master key" in done.stdout
    keys = masterkeys.load(None, key_file, may_generate=False)
    assert keys is not None and len(keys) == 2 and keys[1] == first

    async def check() -> list[str]:
        db = Database(database_url)
        try:
            vault = Vault(db, KeyCipher([keys[0]]))  # the new key alone opens everything
            await vault.verify_master_keys()
            return [(await vault.provider_key(i)).secret for i in range(1, 26)]
        finally:
            await db.dispose()

    assert sorted(asyncio.run(check())) == sorted(secret(n) for n in range(25))
