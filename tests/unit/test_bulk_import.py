"""Bulk import (bulk.py) gives the same outcomes as importing the photos one by one in order:
synthetic templates (FakeFaceAnalyzer, no models) with planted duplicates at scores around the
review and duplicate thresholds, which grow with the gallery while the run goes on. The
expectation is the sequential import's report, run here on a second registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.adapters import compact_scan
from face_dedup.adapters.private_files import private_report
from face_dedup.adapters.self_join import JoinAnswers, join_block
from face_dedup.bootstrap import build_service
from face_dedup.bulk import run_bulk_import
from face_dedup.errors import Reason
from face_dedup.importer import collect_inputs, run_import
from face_dedup.models.custom import find_pack
from face_dedup.settings import Settings
from tests.support.fake_face_analyzer import FakeFaceAnalyzer


def _settings(data_dir: Path) -> Settings:
    return Settings.load({}, data_dir=data_dir, models_dir=data_dir.parent / "no-models")


def _photos(folder: Path, fake: FakeFaceAnalyzer, people: int = 120, seed: int = 5) -> None:
    """Each person has 1-3 photos; a later photo of a person scores 0.30-0.65 with the first
    (across the review threshold, 0.37 -> 0.45 as the gallery grows, and the duplicate one);
    some photos are rejected. File names shuffle the people so duplicates are far apart."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    dim = fake.dim
    names: list[tuple[str, bytes]] = []
    for person in range(people):
        centre = rng.normal(size=dim)
        centre /= np.linalg.norm(centre)
        for shot in range(int(rng.integers(1, 4))):
            photo = f"p{person}-{shot}".encode()
            if shot == 0:
                vector = centre
            else:
                other = rng.normal(size=dim)
                other -= (other @ centre) * centre
                score = rng.uniform(0.30, 0.65)
                vector = score * centre + np.sqrt(1 - score**2) * other / np.linalg.norm(other)
            if rng.random() < 0.05:
                fake.reject(photo, Reason.NO_FACE, "no face")
            else:
                fake.face(photo, vector)
            names.append((f"{rng.integers(10**9):09d}-{person}-{shot}.jpg", photo))
    for name, photo in names:
        (folder / name).write_bytes(photo)


def _comparable(report: Path) -> list[dict[str, Any]]:
    """Report lines with record ids replaced by the source that created them (ids are random)."""
    lines = [__import__("json").loads(line) for line in report.read_text().splitlines()]
    source_of = {line["record_id"]: line["source"] for line in lines if line["record_id"]}
    return [
        {
            "source": line["source"],
            "outcome": line["outcome"],
            "reason": line["reason"],
            "candidates": [
                (source_of.get(c["record_id"], "before"), round(c["score"], 6)) for c in line["candidates"]
            ],
            "case": line["case_id"] is not None,
        }
        for line in lines
    ]


@pytest.fixture
def fake(tmp_path: Path) -> FakeFaceAnalyzer:
    settings = _settings(tmp_path / "seq")
    return FakeFaceAnalyzer(find_pack(settings.model_pack, settings.models_dir))


def test_bulk_import_gives_the_sequential_outcomes(tmp_path: Path, fake: FakeFaceAnalyzer) -> None:
    _photos(tmp_path / "photos", fake)
    inputs = collect_inputs(tmp_path / "photos")
    service, adapters = build_service(_settings(tmp_path / "seq"), analyzer=fake)
    run_import(service, inputs, report=private_report(tmp_path / "seq.jsonl"), workers=2)
    adapters.close()

    service, adapters = build_service(_settings(tmp_path / "bulk"), analyzer=fake)
    summary, answers = run_bulk_import(
        service, inputs, report=private_report(tmp_path / "bulk.jsonl"), workers=2, chunk=16
    )
    adapters.close()

    sequential, bulk = _comparable(tmp_path / "seq.jsonl"), _comparable(tmp_path / "bulk.jsonl")
    assert bulk == sequential
    outcomes = {line["outcome"] for line in bulk}
    assert {"enrolled", "rejected"} <= outcomes and len(outcomes) >= 4  # every band was reached
    assert summary.total == len(inputs)
    assert answers.answered > 0 and answers.fallbacks == 0  # the join answered every search


def test_bulk_import_onto_a_registry_that_has_faces_already(tmp_path: Path, fake: FakeFaceAnalyzer) -> None:
    """The second half imported in bulk onto a registry holding the first half (imported one by
    one) decides exactly as one sequential import of everything; re-running it resumes."""
    _photos(tmp_path / "photos", fake, people=80, seed=9)
    inputs = collect_inputs(tmp_path / "photos")
    half = len(inputs) // 2
    service, adapters = build_service(_settings(tmp_path / "seq"), analyzer=fake)
    run_import(service, inputs, report=private_report(tmp_path / "seq.jsonl"))
    adapters.close()

    service, adapters = build_service(_settings(tmp_path / "bulk"), analyzer=fake)
    run_import(service, inputs[:half], report=private_report(tmp_path / "first.jsonl"))
    # chunks closed by bytes held (a few photos each), not by count
    run_bulk_import(
        service, inputs[half:], report=private_report(tmp_path / "second.jsonl"), chunk=1000, held_bytes=40
    )
    again, _ = run_bulk_import(service, inputs[half:], chunk=10)
    adapters.close()

    (tmp_path / "both.jsonl").write_text(
        (tmp_path / "first.jsonl").read_text() + (tmp_path / "second.jsonl").read_text()
    )
    assert _comparable(tmp_path / "both.jsonl") == _comparable(tmp_path / "seq.jsonl")
    assert again.resumed == len(inputs) - half  # every input recognised: nothing decided twice


@pytest.mark.parametrize("coded", [False, True])
def test_join_block_finds_every_pair_above_the_threshold_and_only_earlier_ones(coded: bool) -> None:
    """Float32 tiles, and int8 code tiles with the margin: planted pairs placed just above and
    just below the threshold (components on the codes' half steps), and outlier rows that int8
    cannot hold, asking and asked."""
    rng = np.random.default_rng(1)
    dim, threshold = 128, 0.5
    rows = rng.normal(size=(900, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    for n in range(120):  # row 400 + n pairs with row n at threshold +- 1e-5 .. 1e-3
        base = rows[n]
        other = rng.normal(size=dim)
        other = (np.floor(other * 8) + 0.5) / 256 * 20  # half steps
        other -= (other @ base) * base
        score = threshold + (1 if n % 2 else -1) * 10.0 ** -(3 + n % 3)
        rows[400 + n] = score * base + np.sqrt(1 - score**2) * other / np.linalg.norm(other)
    rows[10] = 0.9 * np.eye(dim)[5] + 0.1 * rows[10]  # outliers
    rows[450] = 0.6 * rows[10] + 0.4 * rows[450]
    rows[600] = 0.9 * np.eye(dim)[7] + 0.1 * rows[600]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    data = rows.astype(np.float32)
    codes = compact_scan.encode(data) if coded else None
    assert codes is None or codes[1][[10, 600]].all()
    i, j, scores = join_block(data, 300, 900, threshold, tile=64, coded=codes)
    brute = data[300:900] @ data.T
    expected = {(a + 300, b) for a, b in zip(*np.nonzero(brute >= threshold), strict=True) if b <= a + 300}
    got = {(int(a), int(b)) for a, b in zip(i, j, strict=True)}
    assert got >= expected
    assert all(b <= a for a, b in zip(i, j, strict=True))
    assert np.allclose(scores, np.einsum("ij,ij->i", data[i], data[j]), atol=1e-6)
    assert sum(1 for a, b in expected if 400 <= a < 520 and b == a - 400) >= 55  # the planted above
    assert (450, 10) in expected  # an outlier pair
    if codes is not None:  # chunk by chunk, with the transposed tiles kept between calls
        cache: dict[int, NDArray[np.uint8]] = {}
        parts = [
            join_block(data, a, b, threshold, tile=64, coded=codes, transposed=cache)
            for a, b in ((0, 300), (300, 900))
        ]
        assert cache and all(first + 64 <= 300 for first in cache)
        assert np.array_equal(parts[1][0], i) and np.array_equal(parts[1][1], j)


def test_answers_fall_back_to_the_scan_when_they_cannot_be_sure() -> None:
    vectors = np.eye(4, dtype=np.float32)
    answers = JoinAnswers(tenant="t", model_pack="p", threshold=0.5, ids=["a"], vectors=vectors[:1])
    row = answers.append(vectors[1])
    answers.join(row, 0.5)
    answers.expect(row)
    assert answers.answer(vectors[1], tenant="t", model_pack="p", k=5, min_score=0.5) == []
    assert answers.answer(vectors[1], tenant="t", model_pack="p", k=5, min_score=0.4) is None  # lower
    assert answers.answer(vectors[2], tenant="t", model_pack="p", k=5, min_score=0.5) is None  # other
    assert answers.answer(vectors[1], tenant="u", model_pack="p", k=5, min_score=0.5) is None
    answers.changed_elsewhere()
    assert answers.answer(vectors[1], tenant="t", model_pack="p", k=5, min_score=0.5) is None


def test_bulk_import_refuses_a_registry_on_another_index(tmp_path: Path, fake: FakeFaceAnalyzer) -> None:
    """The precomputed answers live in the embedded index; on any other, a typed refusal that
    imports nothing (the CLI prints it as one line)."""
    from face_dedup.bulk import BulkNotSupported
    from tests.support.faiss_index import FaissHnswIndex

    _photos(tmp_path / "photos", fake, people=3)
    service, adapters = build_service(_settings(tmp_path / "bulk"), analyzer=fake)
    service.index = FaissHnswIndex(tmp_path / "index.faiss")
    with pytest.raises(BulkNotSupported, match="embedded index"):
        run_bulk_import(service, collect_inputs(tmp_path / "photos"))
    assert adapters.store.count_templates(tenant=service.tenant, model_pack=service.model_pack) == 0
    adapters.close()


def test_another_process_writing_meanwhile_makes_the_answers_step_aside(tmp_path: Path) -> None:
    """A face enrolled by another process during a bulk run is not in the join: the index
    notices it on its next refresh and scans instead, so it is still found."""
    from face_dedup.adapters.embedded_index import ExactVectorIndex
    from face_dedup.ports import IndexEntry

    vectors = np.eye(8, dtype=np.float32)
    mine = ExactVectorIndex(tmp_path / "index.sqlite")
    other = ExactVectorIndex(tmp_path / "index.sqlite")  # another process's connection
    mine.add([IndexEntry("a", "t", "p", vectors[0])])
    answers = mine.answering(
        "t",
        "p",
        lambda ids, rows: JoinAnswers(tenant="t", model_pack="p", threshold=0.5, ids=ids, vectors=rows),
    )
    row = answers.append(vectors[1])
    answers.join(row, 0.5)
    answers.expect(row)
    assert mine.search(vectors[1], tenant="t", model_pack="p", k=5, min_score=0.5) == []  # answered
    assert answers.answered == 1
    other.add([IndexEntry("b", "t", "p", vectors[1])])
    hits = mine.search(vectors[1], tenant="t", model_pack="p", k=5, min_score=0.5)
    assert [h.record_id for h in hits] == ["b"] and not answers.valid
    mine.stop_answering()
    mine.close()
    other.close()
