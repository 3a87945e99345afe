"""The cloud bulk job's prepare step against hostile manifests (a reviewer's tests, issue 12)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.cloud_bulk_decide import manifest_rows


def _manifest(tmp_path: Path, body: bytes) -> LocalBlobStore:
    uploads = LocalBlobStore(tmp_path / "uploads")
    uploads.put("bulk/t1/b1/manifest.csv", body, "text/csv")
    return uploads


def test_rows_are_counted_as_the_map_numbers_them(tmp_path: Path) -> None:
    body = (
        "\ufefffile,application_id\r\n"  # a BOM and CRLF
        'a.jpg,A-1\r\n\r\n"b,c.jpg",\r\n'  # a blank line skipped; a quoted comma
        '"multi\nline.jpg",A-2\n'  # a quoted newline: one row
        "=cmd|' /C calc'!A0,\n"  # CSV injection is a row like any other (rejected by name later)
    ).encode()
    assert manifest_rows(_manifest(tmp_path, body), "t1", "b1") == 4


def test_a_manifest_of_a_million_short_rows_is_counted_without_holding_them(tmp_path: Path) -> None:
    """2 MB of 1M rows: counting them must not hold a list of every row (~50x the bytes; the
    largest manifest allowed, 256 MB, would take many GB and kill the 1769 MB function)."""
    body = b"file,application_id\n" + b"a\n" * 1_000_000
    uploads = _manifest(tmp_path, body)
    tracemalloc.start()
    try:
        assert manifest_rows(uploads, "t1", "b1") == 1_000_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body)
