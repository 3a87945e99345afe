"""Local-directory adapter of the blob store: one file per key, written atomically, readable
only by the owner (the photos are personal data)."""

from __future__ import annotations

import contextlib
import os
import shutil
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
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:  # refused from its size, unread
                    raise BlobTooLarge(key, size, max_bytes)
                data = handle.read(max_bytes + 1)  # at most one byte past the limit (it may grow)
        except FileNotFoundError:
            raise NotFound(f"no blob {key}") from None
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
