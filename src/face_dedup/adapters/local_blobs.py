"""Local-directory adapter of the blob store: one file per key, written atomically, readable
only by the owner (the photos are personal data)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from face_dedup.adapters.private_files import private_dir
from face_dedup.adapters.sqlite_files import storage_error
from face_dedup.errors import BlobTooLarge, NotFound
from face_dedup.ports import BlobStore


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self._root = root
        private_dir(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self._root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        private_dir(path.parent)  # each level 0700 (the tenant's folder too), whatever the umask
        staged = path.with_name(path.name + ".partial")
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            staged.replace(path)
        except OSError as exc:  # disk full, read-only, permission: one line naming the file
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
            raise storage_error(path, exc) from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None

    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """The file if it holds at most `max_bytes`: refused from its size unread, and never more
        than one byte past the limit read (it may grow between the size and the read). Only a
        regular file is read: a symbolic link (to a file outside the store, or /dev/zero), a
        FIFO (whose read would wait for a writer forever) or a folder is NotFound."""
        path = self._path(key)
        try:  # O_NONBLOCK: opening a FIFO does not wait for a writer (no effect on files)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symbolic link
                raise NotFound(f"no blob {key} (a symbolic link is not followed)") from None
            raise storage_error(path, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotFound(f"no blob {key} (not a regular file)")
            if info.st_size > max_bytes:  # refused from its size, unread
                raise BlobTooLarge(key, info.st_size, max_bytes)
            chunks, left = [], max_bytes + 1
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise BlobTooLarge(key, None, max_bytes)
        return data

    def delete_prefix(self, prefix: str) -> int:
        target = self._path(prefix.rstrip("/"))
        if target.is_dir():
            count = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target)
            return count
        if target.is_file():
            target.unlink()
            return 1
        return 0

    def keys(self, prefix: str = "") -> list[str]:
        base = self._root if not prefix else self._path(prefix.rstrip("/"))
        if base.is_file():
            return [prefix.rstrip("/")]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self._root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")
        )
