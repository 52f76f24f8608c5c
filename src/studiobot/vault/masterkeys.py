"""Finding the master keys: configured, read from the key file, or (embedded default) generated.

OWASP's key-storage advice is to keep keys apart from the data and out of environment variables
where possible (reference rules section 5); the key file, mode 0600, beside but not inside the
database, is the default, and ``STUDIOBOT_MASTER_KEYS`` is there for platforms that only offer
environment secrets.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from studiobot.vault.cipher import MasterKeyError, new_master_key

log = logging.getLogger(__name__)


def load(configured: str | None, path: Path, *, may_generate: bool) -> list[bytes] | None:
    """The master keys, newest first, or None when personal keys stay disabled.

    Args:
        configured: ``STUDIOBOT_MASTER_KEYS`` (comma-separated, newest first), when set.
        path: The key file (one key per line, newest first; ``#`` comments).
        may_generate: Make a key file when there is none (the single-process SQLite default).
            Deployments on PostgreSQL share keys between processes and hosts, so they must
            configure them; generating one per process would lock the others out.

    Raises:
        MasterKeyError: The configured value or the key file is empty or unreadable.
    """
    if configured is not None:
        keys = _parse(configured.replace(",", "\n"))
        if not keys:
            raise MasterKeyError("STUDIOBOT_MASTER_KEYS is set but holds no key.")
        return keys
    if path.exists():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("master key file %s is readable by other users; run: chmod 600 %s", path, path)
        try:
            keys = _parse(path.read_text())
        except OSError as error:
            raise MasterKeyError(f"Cannot read the master key file {path}: {error.strerror}.") from None
        if not keys:
            raise MasterKeyError(f"The master key file {path} holds no key.")
        return keys
    if not may_generate:
        log.warning(
            "personal API keys are disabled: set STUDIOBOT_MASTER_KEY_FILE or STUDIOBOT_MASTER_KEYS "
            "(make a key with `studiobot keys new-master-key`)"
        )
        return None
    key = new_master_key()
    write(path, [key])
    log.warning(
        "generated a master key for personal API keys in %s (mode 0600). Back it up with the "
        "database: without it, stored keys cannot be read.", path,
    )
    return [key]


def write(path: Path, keys: Sequence[bytes]) -> None:
    """Write ``keys`` (newest first) to ``path`` with mode 0600, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    # O_EXCL and the mode at creation: the file is never readable by others, even for a moment.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# studiobot master keys, newest first. Keep a copy with your backups.\n")
        handle.writelines(key.decode("ascii") + "\n" for key in keys)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _parse(text: str) -> list[bytes]:
    lines = [line.strip() for line in text.splitlines()]
    try:
        return [line.encode("ascii") for line in lines if line and not line.startswith("#")]
    except UnicodeEncodeError:
        raise MasterKeyError("A master key holds characters other than URL-safe base64.") from None
