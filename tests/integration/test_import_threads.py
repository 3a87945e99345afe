"""Issue 12, import throughput: the speed-ups of the import path change no outcome. The same
shared photos imported by one analysis thread with OpenCV's own thread pool (as before), and by
two analysis threads with OpenCV working in the calling thread (`--workers 2` now), give the
same report line for line (outcome, reason, candidates and scores, cases) and the same drift
counts (kept through the held writer connection). Skips without ../shared."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from face_dedup.cli import app
from face_dedup.settings import Settings
from tests.unit.test_bulk_import import _comparable


@pytest.fixture
def opencv_threads() -> Iterator[int]:
    """OpenCV's thread count is process-wide: put it back for the tests that follow."""
    before = cv2.getNumThreads()
    yield before
    cv2.setNumThreads(before)


def _drift(data_dir: Path) -> dict[tuple[str, str], int]:
    db = sqlite3.connect(data_dir / "drift.sqlite3")
    try:
        rows = db.execute("SELECT metric, bin, SUM(count) FROM drift_counts GROUP BY metric, bin").fetchall()
    finally:
        db.close()
    return {(str(m), str(b)): int(n) for m, b, n in rows}


def test_one_thread_per_worker_decides_the_same(
    faces_root: Path, base_settings: Settings, tmp_path: Path, opencv_threads: int
) -> None:
    if opencv_threads <= 1:
        pytest.skip("OpenCV runs one thread here already: nothing to compare")
    people = sorted(p for p in (faces_root / "lfw").iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:30]
    photos = [str(photo) for person in people for photo in sorted(person.glob("*.jpg"))[:3]]
    random.Random(7).shuffle(photos)
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(photos) + "\n")
    reports, threads = {}, {}
    for workers in (1, 2):
        reports[workers] = tmp_path / f"w{workers}.jsonl"
        command = ["import", str(listing), "--report", str(reports[workers]), "--workers", str(workers)]
        command += [
            "--data-dir",
            str(tmp_path / f"w{workers}"),
            "--models-dir",
            str(base_settings.models_dir),
        ]
        result = CliRunner().invoke(app, [*command, "--json"])
        assert result.exit_code == 0, result.output
        threads[workers] = cv2.getNumThreads()
    assert threads == {1: opencv_threads, 2: 1}  # the two runs did differ as described
    one, two = _comparable(reports[1]), _comparable(reports[2])
    assert two == one
    assert len(one) == len(photos)
    assert sum(1 for line in one if line["candidates"]) >= 10  # duplicates were found and decided
    # the drift counts: the same in both runs, and one outcome counted per input
    counts = _drift(tmp_path / "w2")
    assert counts == _drift(tmp_path / "w1")
    lines = [json.loads(line) for line in reports[2].read_text().splitlines()]
    outcomes = Counter(line["outcome"] for line in lines)
    assert {b: n for (m, b), n in counts.items() if m == "outcome"} == dict(outcomes)
