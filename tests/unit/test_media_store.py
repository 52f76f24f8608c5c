"""Tests for studiobot.media.store on real files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from studiobot.media.store import LocalStore, StoredObject


def test_put_writes_content_addressed_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    data = b"hello image"
    digest = hashlib.sha256(data).hexdigest()

    stored = store.put(data, "png")

    assert stored == StoredObject(
        key=f"{digest[:2]}/{digest[2:4]}/{digest}.png",
        path=tmp_path / "objects" / digest[:2] / digest[2:4] / f"{digest}.png",
        sha256=digest,
        size=len(data),
    )
    assert stored.path.read_bytes() == data
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o644
    assert store.open(stored.key) == data
    assert store.path_for(stored.key) == stored.path


def test_put_is_idempotent_and_skips_existing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = store.put(b"same", "jpg")
    os.utime(first.path, (1_000_000, 1_000_000))

    second = store.put(b"same", "jpg")

    assert second == first
    assert first.path.stat().st_mtime == 1_000_000  # not rewritten
    assert store.put(b"same", "webp").key != first.key  # the extension is part of the key


def test_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for i in range(5):
        store.put(f"object {i}".encode(), "png")

    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]

    assert len(names) == 5
    assert not [n for n in names if n.startswith(".tmp-")]


def test_put_refuses_odd_extensions(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for ext in ("", ".png", "PNG", "p/ng", "png\0", "x" * 11):
        with pytest.raises(ValueError):
            store.put(b"data", ext)


@pytest.mark.parametrize(
    "key",
    ["../outside.png", "ab/../../outside.png", "/etc/passwd", "ab\\..\\x", "", "..", "a/\0/b"],
)
def test_path_for_refuses_escaping_keys(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "objects")

    with pytest.raises(ValueError):
        store.path_for(key)
    with pytest.raises(ValueError):
        store.open(key)


def test_path_for_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "ab").symlink_to(tmp_path)

    with pytest.raises(ValueError):
        LocalStore(root).open("ab/secret.txt")


def test_open_missing_key_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalStore(tmp_path).open("ab/cd/missing.png")
