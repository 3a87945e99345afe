"""The registry's write lock on one machine: one writer at a time across every process (imports,
`serve`, `erase`) and every thread in them.

Why a lock and not the cloud's post-commit re-check: with a lock, the search that decides an
input and the commit that records it happen with no other enrollment in between, so a later
copy is flagged against the one enrolled record ("exactly one enrolled, the rest flagged with
the right candidate"), instead of enrolling both and raising the pair afterwards. Its cost is
that decisions are serial across processes: the lock is held for the search and the commit of
one input (milliseconds at registry scale; analysis, the slow part, runs outside it).

`fcntl.flock` on a file in the data dir: the kernel releases it when the process dies
(kill -9 included), so a crashed import never leaves the registry locked."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from face_dedup.adapters.sqlite_files import storage_error


class RegistryLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        """Hold the lock; re-entrant within a thread (erase inside a held lock, etc.)."""
        with self._threads:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise storage_error(self._path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the other process's one input
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
