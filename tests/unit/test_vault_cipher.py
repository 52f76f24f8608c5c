"""The key vault's cryptography and master-key handling, without a database."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from studiobot.vault import masterkeys
from studiobot.vault.cipher import KeyCipher, MasterKeyError, hint, new_master_key

SECRET = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


def test_round_trip_and_no_plaintext_in_the_token() -> None:
    cipher = KeyCipher([new_master_key()])
    token = cipher.encrypt(SECRET)
    assert SECRET not in token and SECRET[-12:] not in token
    assert cipher.decrypt(token) == SECRET
    assert cipher.encrypt(SECRET) != token  # a random IV every time


def test_another_master_key_cannot_open_a_token() -> None:
    token = KeyCipher([new_master_key()]).encrypt(SECRET)
    with pytest.raises(InvalidToken):
        KeyCipher([new_master_key()]).decrypt(token)


def test_rotation_keeps_the_plaintext_and_frees_the_old_key() -> None:
    old, new = new_master_key(), new_master_key()
    token = KeyCipher([old]).encrypt(SECRET)
    both = KeyCipher([new, old])
    assert both.decrypt(token) == SECRET  # the old key still opens it during rotation
    rotated = both.rotate(token)
    assert KeyCipher([new]).decrypt(rotated) == SECRET
    with pytest.raises(InvalidToken):
        KeyCipher([old]).decrypt(rotated)
    # MultiFernet.rotate keeps the original timestamp (reference rules section 5).
    assert Fernet(new).extract_timestamp(rotated.encode()) == Fernet(old).extract_timestamp(token.encode())


def test_fingerprints_are_keyed_and_recognised_across_rotation() -> None:
    old, new = new_master_key(), new_master_key()
    before = KeyCipher([old]).fingerprint(SECRET)
    during = KeyCipher([new, old]).fingerprints(SECRET)
    assert during[1] == before and during[0] != before  # the old print is still matched
    assert KeyCipher([new]).fingerprint(SECRET) == during[0]
    assert KeyCipher([new_master_key()]).fingerprint(SECRET) != before  # keyed, not a plain hash
    assert SECRET not in before and len(before) == 64


def test_hint_is_only_the_last_four_characters() -> None:
    assert hint(SECRET) == "…WXYZ"


@pytest.mark.parametrize("keys", [[], [b"not-a-fernet-key"], [new_master_key(), b"short"]])
def test_malformed_master_keys_are_a_clear_error(keys: list[bytes]) -> None:
    with pytest.raises(MasterKeyError) as raised:
        KeyCipher(keys)
    assert "master key" in raised.value.message.lower()


def test_the_embedded_default_generates_a_private_key_file_and_says_so(tmp_path: Path, caplog) -> None:
    path = tmp_path / "data" / "master.key"
    with caplog.at_level(logging.WARNING):
        keys = masterkeys.load(None, path, may_generate=True)
    assert keys is not None and len(keys) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated a master key" in caplog.text and str(path) in caplog.text
    assert keys[0].decode() not in caplog.text
    assert masterkeys.load(None, path, may_generate=True) == keys  # read back, not regenerated


def test_without_a_key_and_without_generation_personal_keys_are_off(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert masterkeys.load(None, tmp_path / "master.key", may_generate=False) is None
    assert "disabled" in caplog.text and not (tmp_path / "master.key").exists()


def test_configured_keys_win_and_keep_their_order(tmp_path: Path) -> None:
    first, second = new_master_key(), new_master_key()
    configured = f" {first.decode()} , {second.decode()} "
    assert masterkeys.load(configured, tmp_path / "unused", may_generate=True) == [first, second]
    assert not (tmp_path / "unused").exists()


def test_key_file_comments_order_and_loose_permissions(tmp_path: Path, caplog) -> None:
    first, second = new_master_key(), new_master_key()
    path = tmp_path / "master.key"
    masterkeys.write(path, [first, second])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert masterkeys.load(None, path, may_generate=False) == [first, second]
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        masterkeys.load(None, path, may_generate=False)
    assert "chmod 600" in caplog.text


@pytest.mark.parametrize("content", ["", "# only a comment\n", "ключ\n"])
def test_empty_or_garbled_key_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "master.key"
    path.write_text(content)
    with pytest.raises(MasterKeyError):
        masterkeys.load(None, path, may_generate=True)
