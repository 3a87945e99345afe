"""SQLite adapter of the drift counts: one row per tenant, channel, day, measure and bin.

Its own file next to the registry (`drift.sqlite3`): counts only, nothing biometric, so it
outlives erasures by design and can be shared with whoever watches operations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from face_dedup.adapters.private_files import private_dir
from face_dedup.adapters.sqlite_files import private_file, storage_error
from face_dedup.drift import DayKey, DriftStore

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


class SqliteDriftStore(DriftStore):
    """A connection per call: one input adds a handful of rows, and nothing stays open that a
    command would have to close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        private_file(path)  # 0600 whatever the umask (its -wal and -shm inherit the mode)
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # every command opens it: a full disk, read-only media ...
            raise storage_error(path, exc) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction
                yield db
        finally:
            db.close()

    def add(self, key: DayKey, counts: Mapping[tuple[str, str], int]) -> None:
        rows = [(key.tenant, key.channel, key.day, m, b, n) for (m, b), n in counts.items()]
        with self._connect() as db:
            db.executemany(
                "INSERT INTO drift_counts VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, channel, day, metric, bin) "
                "DO UPDATE SET count = count + excluded.count",
                rows,
            )

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
