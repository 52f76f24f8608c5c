"""Encrypting provider keys under rotating master keys (reference rules section 5).

Fernet (AES-128-CBC with HMAC-SHA256, random IV) through ``MultiFernet``: new tokens use the first
master key; any listed key decrypts; ``rotate`` re-encrypts under the first and keeps the token's
timestamp. Fingerprints are HMAC-SHA256 under a key derived from each master key with HKDF, so
they reveal nothing about the key and a fingerprint under an older master key is still recognised
until ``studiobot keys rotate`` recomputes it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from studiobot.errors import UserError

#: HKDF ``info`` for the fingerprint key: a different purpose gives an independent key.
_FINGERPRINT_INFO = b"studiobot api-key fingerprint v1"


class MasterKeyError(UserError):
    """The master keys are missing, malformed or do not open the stored keys (a start-up error)."""


class KeyCipher:
    """Encrypts, decrypts and fingerprints provider keys.

    Args:
        master_keys: Fernet keys (URL-safe base64 of 32 bytes), newest first. The first encrypts;
            all decrypt.

    Raises:
        MasterKeyError: No key given, or one is not a Fernet key.
    """

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise MasterKeyError("No master key was given for personal API keys.")
        fernets = []
        for position, key in enumerate(master_keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise MasterKeyError(
                    f"Master key {position} is not a Fernet key (32 bytes, URL-safe base64). "
                    "Make one with `studiobot keys new-master-key`."
                ) from None
        self._fernet = MultiFernet(fernets)
        self._fingerprint_keys = tuple(_fingerprint_key(key) for key in master_keys)

    @property
    def key_count(self) -> int:
        """How many master keys are configured (1 when no rotation is under way)."""
        return len(self._fingerprint_keys)

    def encrypt(self, secret: str) -> str:
        """A Fernet token (ASCII) for ``secret`` under the newest master key."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The key inside ``token``.

        Raises:
            cryptography.fernet.InvalidToken: No configured master key opens it (wrong key, or tampered with).
        """
        return self._fernet.decrypt(token.encode("ascii")).decode()

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the newest master key (same plaintext, same timestamp).

        Raises:
            cryptography.fernet.InvalidToken: No configured master key opens it.
        """
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")

    def fingerprint(self, secret: str) -> str:
        """Hex HMAC-SHA256 of ``secret`` under the newest master key's fingerprint key."""
        return self.fingerprints(secret)[0]

    def fingerprints(self, secret: str) -> tuple[str, ...]:
        """The fingerprint of ``secret`` under every master key, newest first (for duplicate checks
        while rows fingerprinted under an older key remain)."""
        return tuple(hmac.new(k, secret.encode(), hashlib.sha256).hexdigest() for k in self._fingerprint_keys)


def hint(secret: str) -> str:
    """What may be shown of a key: an ellipsis and its last four characters (``…AbCd``)."""
    return "…" + secret[-4:]


def new_master_key() -> bytes:
    """A fresh master key from the operating system's CSPRNG (``Fernet.generate_key``)."""
    return Fernet.generate_key()


def _fingerprint_key(master_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_INFO).derive(master_key)
