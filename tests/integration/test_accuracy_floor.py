"""Accuracy must not regress: real models on the LFW development pairs from ../shared.

Floors are set a little below what was measured (BENCHMARKS.md), so that an honest change
of the pipeline that loses accuracy fails here, and noise does not."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup import calibration as cal
from face_dedup.bootstrap import load_tail
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceEngine, FaceTemplate

pytestmark = pytest.mark.shared_data

# Measured with the default pack (yunet-sface-flip-v1): fold 0 at the FMR 1e-2 threshold 99.33%,
# 5-fold 99.33%, TAR at FAR 1e-3 (all pairs) 98.5%.
FOLD0_FLOOR = 0.985
FIVE_FOLD_FLOOR = 0.990
TAR_AT_1E3_FLOOR = 0.975


def embed_all(engine: FaceEngine, root: Path, files: list[str]) -> dict[str, NDArray[np.float32]]:
    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(files, pool.map(lambda f: engine.process((root / f).read_bytes()), files), strict=True)
        )
    return {f: r.embedding for f, r in results.items() if isinstance(r, FaceTemplate)}


def pair_scores(vectors: dict[str, NDArray[np.float32]], rows: list[dict[str, str]]) -> NDArray[np.float64]:
    """A pair with an unusable photo scores -1: it counts against accuracy."""
    return np.array(
        [
            float(vectors[r["file1"]] @ vectors[r["file2"]])
            if r["file1"] in vectors and r["file2"] in vectors
            else -1.0
            for r in rows
        ]
    )


def load_pairs(root: Path) -> list[dict[str, str]]:
    with (root / "lfw_pairs_dev.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_fold0_accuracy_at_the_calibrated_threshold(
    engine: FaceEngine, base_settings: Settings, faces_root: Path
) -> None:
    if engine.pack.id != base_settings.model_pack:
        pytest.skip("floor measured for the default pack")
    rows = [r for r in load_pairs(faces_root) if r["fold"] == "0"]
    files = sorted({r["file1"] for r in rows} | {r["file2"] for r in rows})
    scores = pair_scores(embed_all(engine, faces_root, files), rows)
    same = np.array([r["same"] == "1" for r in rows])
    threshold = load_tail(base_settings, engine.pack).threshold_for_fmr(1e-2)
    accuracy = float(np.mean((scores >= threshold) == same))
    assert accuracy >= FOLD0_FLOOR, f"fold 0 accuracy {accuracy:.4f} at threshold {threshold:.3f}"


@pytest.mark.slow
def test_five_fold_accuracy_and_tar(engine: FaceEngine, faces_root: Path) -> None:
    rows = load_pairs(faces_root)
    files = sorted(p.relative_to(faces_root).as_posix() for p in (faces_root / "lfw").glob("*/*.jpg"))
    vectors = embed_all(engine, faces_root, files)
    scores = pair_scores(vectors, rows)
    same = np.array([r["same"] == "1" for r in rows])
    accuracy, _ = cal.kfold_accuracy(scores, same, [int(r["fold"]) for r in rows])
    assert accuracy >= FIVE_FOLD_FLOOR
    usable = sorted(vectors)
    genuine, impostor = cal.all_pairs_scores(
        np.stack([vectors[f] for f in usable]), [f.split("/")[1] for f in usable]
    )
    tar, _ = cal.tar_at_far(genuine, impostor, 1e-3)  # millions of impostor pairs: 1e-3 is measurable
    assert tar >= TAR_AT_1E3_FLOOR
