"""The registry's write lock on one machine: one writer at a time across every process (imports,
`serve`, `erase`) and every thread in them.

Why a lock and not the cloud's post-commit re-check: with a lock, the search that decides an
input and the commit that records it happen with no other enrollment in between, so a later
copy is flagged against the one enrolled record ("exactly one enrolled, the rest flagged with
the right candidate"), instead of enrolling both and raising the pair afterwards. Its cost is
that decisions are serial across processes: the lock is held for the search and the commit of
one input (milliseconds at registry scale; analysis, the slow part, runs outside it).

`fcntl.flock` on the data dir itself: the kernel releases it when the process dies (kill -9
included), so a crashed import never leaves the registry locked. Not on a lock file inside it:
an operator who removes a "stale" `registry.lock` while a process holds it would let the next
process lock a new file, and two writers in (the data dir cannot be removed while in use). The
`path` given names that historical file; only its folder is used."""

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
        folder = self._path.parent
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise storage_error(folder, exc) from None
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
