"""Bulk import against a sequential import on edge cases the main tests reach only by chance:
the same photo under several names (exact ties, duplicates inside one chunk), a rejected
photo followed by others, chunks of 1, 3 and 5 photos, and a run stopped in the middle of a
chunk, then resumed. FakeFaceAnalyzer, no models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from face_dedup.adapters.private_files import private_report
from face_dedup.bootstrap import build_service
from face_dedup.bulk import run_bulk_import
from face_dedup.errors import Reason
from face_dedup.importer import ReportLine, collect_inputs, run_import
from face_dedup.models.custom import find_pack
from tests.support.fake_face_analyzer import FakeFaceAnalyzer
from tests.unit.test_bulk_import import _comparable, _settings


@pytest.fixture
def fake(tmp_path: Path) -> FakeFaceAnalyzer:
    settings = _settings(tmp_path / "seq")
    return FakeFaceAnalyzer(find_pack(settings.model_pack, settings.models_dir))


def _copies(folder: Path, fake: FakeFaceAnalyzer) -> None:
    rng = np.random.default_rng(3)
    folder.mkdir()
    n = 0
    for person in range(30):
        vector = rng.normal(size=fake.dim)
        photo = f"p{person}".encode()
        fake.face(photo, vector / np.linalg.norm(vector))
        for copy in range(int(rng.integers(1, 5))):  # the same bytes under several names
            (folder / f"{n:04d}-{person}-{copy}.jpg").write_bytes(photo)
            n += 1
        if person % 7 == 0:
            bad = f"bad{person}".encode()
            fake.reject(bad, Reason.NO_FACE, "no face")
            (folder / f"{n:04d}-bad.jpg").write_bytes(bad)
            n += 1


def _same_up_to_ties(report: Path) -> list[dict[str, Any]]:
    """Candidates of equal (6-digit) score in source order: copies of one photo score 1.0 to
    within a float32 ulp, and the index's scan and the join's per-pair products round that
    last bit differently (bulk.py's docstring), which orders exact ties either way."""
    lines = _comparable(report)
    for line in lines:
        line["candidates"] = sorted(line["candidates"], key=lambda c: (-c[1], c[0]))
    return lines


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_copies_of_one_photo_and_rejected_photos_decide_as_in_order(
    tmp_path: Path, fake: FakeFaceAnalyzer, chunk: int
) -> None:
    _copies(tmp_path / "photos", fake)
    inputs = collect_inputs(tmp_path / "photos")
    service, adapters = build_service(_settings(tmp_path / "seq"), analyzer=fake)
    run_import(service, inputs, report=private_report(tmp_path / "seq.jsonl"))
    adapters.close()
    service, adapters = build_service(_settings(tmp_path / "bulk"), analyzer=fake)
    _, answers = run_bulk_import(service, inputs, report=private_report(tmp_path / "bulk.jsonl"), chunk=chunk)
    adapters.close()
    expected = _same_up_to_ties(tmp_path / "seq.jsonl")
    assert _same_up_to_ties(tmp_path / "bulk.jsonl") == expected
    assert {"enrolled", "duplicate", "rejected"} <= {line["outcome"] for line in expected}
    assert answers.answered > 0 and answers.fallbacks == 0


class _Stop(Exception):
    pass


def test_a_run_stopped_inside_a_chunk_resumes_to_the_sequential_outcomes(
    tmp_path: Path, fake: FakeFaceAnalyzer
) -> None:
    _copies(tmp_path / "photos", fake)
    inputs = collect_inputs(tmp_path / "photos")
    service, adapters = build_service(_settings(tmp_path / "seq"), analyzer=fake)
    run_import(service, inputs, report=private_report(tmp_path / "seq.jsonl"))
    adapters.close()

    seen: list[ReportLine] = []

    def stop_midway(line: ReportLine) -> None:
        seen.append(line)
        if len(seen) == 13:  # the 3rd photo of the 3rd 5-photo chunk: stopped mid-chunk
            raise _Stop

    service, adapters = build_service(_settings(tmp_path / "bulk"), analyzer=fake)
    with pytest.raises(_Stop):
        run_bulk_import(
            service, inputs, report=private_report(tmp_path / "first.jsonl"), chunk=5, on_progress=stop_midway
        )
    summary, _ = run_bulk_import(service, inputs, report=private_report(tmp_path / "again.jsonl"), chunk=5)
    adapters.close()

    assert summary.resumed == 13
    first = (tmp_path / "first.jsonl").read_text().splitlines()
    again = (tmp_path / "again.jsonl").read_text().splitlines()
    (tmp_path / "both.jsonl").write_text("\n".join(first + again[13:]) + "\n")
    assert _same_up_to_ties(tmp_path / "both.jsonl") == _same_up_to_ties(tmp_path / "seq.jsonl")
