"""RecordStore.template_packs on SQLite: every pack a tenant's records are in, from the
(tenant, model_pack) index (the pack guard asks it at every start: never a scan)."""

from __future__ import annotations

from pathlib import Path

from face_dedup.adapters.sqlite_store import SqliteRecordStore


def _add(store: SqliteRecordStore, record_id: str, tenant: str, pack: str) -> None:
    with store._db:  # rows as an enrollment leaves them, only the columns the question reads vary
        store._db.execute(
            "INSERT INTO records(record_id, tenant, model_pack, source, content_sha256, status, created_at, "
            "quality, embedding) VALUES (?, ?, ?, 's', '0', 'enrolled', 't', '{}', x'00')",
            (record_id, tenant, pack),
        )


def test_every_pack_of_the_tenant_and_only_its_own(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "registry.sqlite")
    try:
        assert store.template_packs(tenant="a") == frozenset()
        for n, (tenant, pack) in enumerate(
            [("a", "p2"), ("a", "p1"), ("a", "p2"), ("b", "p3"), ("a", "p1-x"), ("c", "p0")]
        ):
            _add(store, f"r{n}", tenant, pack)
        assert store.template_packs(tenant="a") == {"p1", "p1-x", "p2"}
        assert store.template_packs(tenant="b") == {"p3"}
        assert store.template_packs(tenant="nobody") == frozenset()
    finally:
        store.close()


def test_the_question_is_an_index_search_not_a_scan(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "registry.sqlite")
    try:
        plan = store._db.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(model_pack) FROM records WHERE tenant = ? AND model_pack > ?",
            ("a", ""),
        ).fetchall()
    finally:
        store.close()
    detail = " ".join(str(row[3]) for row in plan)
    assert "SEARCH records USING COVERING INDEX records_tenant" in detail and "SCAN" not in detail
