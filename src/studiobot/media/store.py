"""A content-addressed object store on a local folder.

Objects live at ``root/ab/cd/<sha256>.<ext>``, where ``ab`` and ``cd`` are the first two hex pairs
of the SHA-256 of the content, so a folder never holds more than a few thousand files and the same
bytes are stored once. Writes are atomic (temporary file, then ``os.replace``), so a reader never
sees half a file. The functions are synchronous; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["LocalStore", "StoredObject"]

_EXT = re.compile(r"[a-z0-9]{1,10}")
_FILE_MODE = 0o644


@dataclass(frozen=True)
class StoredObject:
    """Where an object was stored.

    Attributes:
        key: Path relative to the store root, posix style (``ab/cd/<sha256>.<ext>``).
        path: Absolute path of the file.
        sha256: Lower-case hex SHA-256 of the content.
        size: Content length in bytes.
    """

    key: str
    path: Path
    sha256: str
    size: int


class LocalStore:
    """Content-addressed files under ``root``.

    Args:
        root: The store folder; created (with parents) on the first ``put``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def put(self, data: bytes, ext: str) -> StoredObject:
        """Store ``data`` under its SHA-256, unless an object with that key already exists.

        Args:
            data: The content.
            ext: File extension without the dot: 1-10 lower-case letters or digits (``png``).

        Returns:
            The object's key, path, hash and size.

        Raises:
            ValueError: ``ext`` is not a plain lower-case extension.
            OSError: The file could not be written.
        """
        if not _EXT.fullmatch(ext):
            raise ValueError(f"bad file extension {ext!r}")
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest[:2]}/{digest[2:4]}/{digest}.{ext}"
        path = self.root / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomically(path, data)
        return StoredObject(key=key, path=path, sha256=digest, size=len(data))

    def path_for(self, key: str) -> Path:
        """The absolute path of ``key``, which need not exist yet.

        Raises:
            ValueError: ``key`` is empty, absolute, contains ``..`` or a backslash, or otherwise
                resolves outside the root (including through a symlink).
        """
        pure = PurePosixPath(key)
        if not key or "\\" in key or "\0" in key or pure.is_absolute() or ".." in pure.parts:
            raise ValueError("object key escapes the store")
        path = self.root.joinpath(*pure.parts)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError("object key escapes the store")
        return path

    def open(self, key: str) -> bytes:
        """Read the object stored under ``key``.

        Raises:
            ValueError: ``key`` escapes the store (see :meth:`path_for`).
            FileNotFoundError: No object is stored under ``key``.
        """
        return self.path_for(key).read_bytes()

    def delete(self, key: str) -> None:
        """Remove the object stored under ``key``; nothing happens when there is none.

        Callers must first make sure no asset still refers to ``key`` (objects are shared by
        content).

        Raises:
            ValueError: ``key`` escapes the store (see :meth:`path_for`).
        """
        self.path_for(key).unlink(missing_ok=True)

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        # The temporary file sits in the destination folder so os.replace stays on one
        # filesystem, which is what makes it atomic. If two writers race, both hold the same
        # bytes, so whichever replace lands last is equally right.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, _FILE_MODE)  # mkstemp creates 0o600
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
