"""The cloud bulk job's prepare step against hostile manifests (a reviewer's tests, issue 12)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import cast

import pytest

from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.cloud_bulk import BadItem, analyse_rows
from face_dedup.cloud_bulk_decide import manifest_rows
from face_dedup.service import DedupService


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


def test_an_item_of_a_manifest_over_the_limit_fails_before_any_row_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every item of the rows map checks the manifest's size (a one-byte read): a manifest
    prepare would refuse stops the job in the map's first items, with no photo read and no
    part written, instead of after every row was analysed."""
    from face_dedup import cloud_bulk

    monkeypatch.setattr(cloud_bulk, "MANIFEST_MAX_BYTES", 100)
    uploads = _manifest(tmp_path, b"file,application_id\n" + b"a.jpg,\n" * 20)  # 160 bytes
    uploads.put("bulk/t1/b1/a.jpg", b"a photo", "image/jpeg")
    parts = LocalBlobStore(tmp_path / "parts")
    untouched = cast(DedupService, object())  # any use of the service fails the test
    with pytest.raises(BadItem, match="the manifest is 160 bytes; a bulk job takes at most 100"):
        analyse_rows(
            service=untouched,
            uploads=uploads,
            parts=parts,
            tenant="t1",
            batch="b1",
            job="j1",
            items=[{"row": 0, "file": "a.jpg", "application_id": ""}],
        )
    assert parts.keys() == []
    monkeypatch.setattr(cloud_bulk, "MANIFEST_MAX_BYTES", 160)  # at the limit: goes on to the rows
    with pytest.raises(AttributeError):
        analyse_rows(
            service=untouched,
            uploads=uploads,
            parts=parts,
            tenant="t1",
            batch="b1",
            job="j1",
            items=[{"row": 0, "file": "a.jpg", "application_id": ""}],
        )
