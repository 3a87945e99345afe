"""SQLite adapter of the drift counts: one row per tenant, channel, day, measure and bin.

Its own file next to the registry (`drift.sqlite3`): counts only, nothing biometric, so it
outlives erasures by design and can be shared with whoever watches operations.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from face_dedup.adapters.private_files import private_dir
from face_dedup.adapters.sqlite_files import private_file, storage_error
from face_dedup.drift import DayKey, DriftStore
from face_dedup.errors import StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_counts (
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    day TEXT NOT NULL,
    metric TEXT NOT NULL,
    bin TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (tenant, channel, day, metric, bin)
);
"""


DAMAGED_COUNTS = (
    "the drift counts are damaged: move this file and its -wal and -shm files aside (daily counts "
    "only, nothing biometric; the next command starts new ones, `report drift` counts from then on)"
)

# Writer connections a forked child inherited: never used, closed or freed there.
_INHERITED: list[sqlite3.Connection | None] = []


class SqliteDriftStore(DriftStore):
    """Reads open a connection per call. Writes (`add`: a handful of rows per decided input)
    share one connection held for the store's life: opening and closing per input cost an
    import about 30 ms of disk waits per photo (the last connection's close checkpoints the
    log and syncs the file, and the default `synchronous=FULL` syncs every commit), all of it
    on the thread that registers inputs one by one. The held connection uses WAL with
    `synchronous=NORMAL`, as the registry does: a crash keeps the file consistent; a power
    cut may drop the last commits, and a count is never part of an enrollment's durability
    (losing one must not fail an input: `DriftRecorder`). Closed by `close()`, or when the
    store is collected; reopened in a forked child."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        private_file(path)  # 0600 whatever the umask (its -wal and -shm inherit the mode)
        self._lock = threading.Lock()  # one writer connection, possibly several threads (serve)
        self._writer: sqlite3.Connection | None = None
        self._writer_pid = 0
        self._finalizer: weakref.finalize[[], SqliteDriftStore] | None = None
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # every command opens it: a full disk, read-only media ...
            error = storage_error(path, exc)
            if error.kind == "corrupt":  # `doctor` (the generic advice) does not mend this file
                raise StorageError(f"{path}: {exc}; {DAMAGED_COUNTS}", "corrupt") from None
            raise error from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction
                yield db
        finally:
            db.close()

    def _held(self) -> sqlite3.Connection:
        """The writer connection (called with the lock held)."""
        if self._writer is not None and self._writer_pid == os.getpid():
            return self._writer
        self._forget_inherited()
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")
        self._writer, self._writer_pid = db, os.getpid()
        self._finalizer = weakref.finalize(self, db.close)
        return db

    def add(self, key: DayKey, counts: Mapping[tuple[str, str], int]) -> None:
        rows = [(key.tenant, key.channel, key.day, m, b, n) for (m, b), n in counts.items()]
        with self._lock:
            db = self._held()
            with db:  # one transaction: committed before add returns, rolled back on error
                db.executemany(
                    "INSERT INTO drift_counts VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant, channel, day, metric, bin) "
                    "DO UPDATE SET count = count + excluded.count",
                    rows,
                )

    def _forget_inherited(self) -> None:
        """In a forked child, the parent's connection is not this process's to use, close or
        free (SQLite: never carry a connection across fork; freeing it closes it): kept as is."""
        if self._finalizer is not None and self._writer_pid != os.getpid():
            self._finalizer.detach()
            _INHERITED.append(self._writer)
            self._writer, self._finalizer = None, None

    def close(self) -> None:
        with self._lock:
            self._forget_inherited()
            if self._finalizer is not None:
                self._finalizer()  # closes the writer connection, once
            self._writer, self._finalizer = None, None

    def counts(
        self, *, tenant: str, first_day: str, last_day: str, channel: str | None = None
    ) -> dict[tuple[str, str], int]:
        query = "SELECT metric, bin, SUM(count) FROM drift_counts WHERE tenant = ? AND day >= ? AND day <= ?"
        params: list[str] = [tenant, first_day, last_day]
        if channel is not None:
            query += " AND channel = ?"
            params.append(channel)
        with self._connect() as db:
            rows = db.execute(query + " GROUP BY metric, bin", params).fetchall()
        return {(str(m), str(b)): int(n) for m, b, n in rows}

    def channels(self, *, tenant: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT DISTINCT channel FROM drift_counts WHERE tenant = ? ORDER BY channel", (tenant,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def days(self, *, tenant: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT DISTINCT day FROM drift_counts WHERE tenant = ? ORDER BY day", (tenant,)
            ).fetchall()
        return [str(r[0]) for r in rows]
