"""What only the SQLite adapter promises beyond the store contract."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from face_dedup.adapters.sqlite_store import SqliteRecordStore
from tests.unit.test_record_store_contract import event, open_case


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SqliteRecordStore:
    return SqliteRecordStore(tmp_path / "registry.sqlite")


def test_audit_log_is_append_only(sqlite_store: SqliteRecordStore, tmp_path: Path) -> None:
    sqlite_store.append_audit(event())
    sqlite_store.close()
    raw = sqlite3.connect(tmp_path / "registry.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE audit SET actor = 'someone else'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM audit")
    raw.close()


def test_erased_templates_are_overwritten_on_disk(sqlite_store: SqliteRecordStore, tmp_path: Path) -> None:
    open_case(sqlite_store)
    sqlite_store.erase_record("r2", event("record.erased"))
    sqlite_store.close()
    # secure_delete + checkpoint: the erased template's bytes are not left in the database file
    marker = np.full(4, 0.5, dtype=np.float32).tobytes()
    assert (tmp_path / "registry.sqlite").read_bytes().count(marker) == 1  # only r1's template remains
