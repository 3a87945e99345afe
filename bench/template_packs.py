"""What the pack guard's start-up question costs on a large registry (pack_guard.py).

Fills a throwaway SQLite registry with N synthetic records of one tenant (the embedding column
holds 4 bytes: the index the question reads does not contain it), then times
`SqliteRecordStore.template_packs` (a MIN seek of the (tenant, model_pack) index per pack) beside
the DISTINCT it replaces. Prints wall and CPU time per call; no photos, no models.

    .venv/bin/python bench/template_packs.py --records 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from face_dedup.adapters.sqlite_store import SqliteRecordStore


def _fill(store_path: Path, records: int) -> None:
    store = SqliteRecordStore(store_path)
    db = store._db  # a bench's bulk fill: one transaction of plain INSERTs
    rows = (
        (
            f"r{n:08d}",
            "default",
            "yunet-sface-v1",
            "bench",
            "0" * 64,
            "enrolled",
            "2026-12-02",
            "{}",
            b"\0\0\0\0",
        )
        for n in range(records)
    )
    with db:
        db.executemany(
            "INSERT INTO records(record_id, tenant, model_pack, source, content_sha256, status, created_at, "
            "quality, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute(
            "INSERT INTO records(record_id, tenant, model_pack, source, content_sha256, status, created_at, "
            "quality, embedding) "
            "VALUES ('other', 'other', 'yunet-sface-flip-v1', 'b', '0', 'enrolled', 'x', '{}', x'00')"
        )
    store.close()


def _timed(call: object, repeat: int) -> tuple[float, float]:
    assert callable(call)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - wall) / repeat * 1e3, (time.process_time() - cpu) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "registry.sqlite"
        _fill(path, args.records)
        store = SqliteRecordStore(path)
        try:
            packs = store.template_packs(tenant="default")
            assert packs == {"yunet-sface-v1"}, packs
            guard = _timed(lambda: store.template_packs(tenant="default"), 200)
            plan = store._db.execute(
                "EXPLAIN QUERY PLAN SELECT MIN(model_pack) FROM records WHERE tenant = ? AND model_pack > ?",
                ("default", ""),
            ).fetchall()
            distinct = _timed(
                lambda: store._db.execute(
                    "SELECT DISTINCT model_pack FROM records WHERE tenant = ?", ("default",)
                ).fetchall(),
                3,
            )
        finally:
            store.close()
    print(f"records: {args.records:,}; plan: {plan[0][3]}")
    print(f"template_packs: {guard[0]:.3f} ms wall, {guard[1]:.3f} ms CPU per call")
    print(f"SELECT DISTINCT (what it replaces): {distinct[0]:.1f} ms wall, {distinct[1]:.1f} ms CPU per call")


if __name__ == "__main__":
    main()
