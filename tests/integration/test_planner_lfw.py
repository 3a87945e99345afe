"""The planner reproduces a real import (slow: the LFW development photos through the real
engine, or their cached templates in artifacts/lfw-templates.npz when a calibrate --cache run
left them there).

Half of the people calibrate (impostor tail, genuine curve); the other half is imported in
path order as one registry; the planner's prediction for that import, from the curves alone,
must lie inside the 99% interval of the measured duplicate recall and false-alarm rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from face_dedup import calibration as cal
from face_dedup import planner
from face_dedup.calibrate import _embed_all, read_csv
from face_dedup.settings import Settings

pytestmark = pytest.mark.slow
CACHE = Path(__file__).resolve().parents[2] / "artifacts" / "lfw-templates.npz"


def wilson(k: int, n: int, z: float = 2.58) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_plan_reproduces_importing_the_development_photos(
    faces_root: Path, base_settings: Settings, tmp_path: Path
) -> None:
    files = [r["file"] for r in read_csv(faces_root / "lfw_sex.csv", ("file", "identity"))]
    cache = CACHE if CACHE.is_file() else tmp_path / "templates.npz"
    vectors, _ = _embed_all(base_settings, faces_root, sorted(files), cache)
    names = sorted(vectors)
    assert len(names) >= 3800
    matrix = np.stack([vectors[n] for n in names]).astype(np.float32)
    who = [Path(n).parent.name for n in names]
    people = sorted(set(who))
    for calib, test in ((set(people[0::2]), set(people[1::2])), (set(people[1::2]), set(people[0::2]))):
        c = [i for i, p in enumerate(who) if p in calib]
        t = [i for i, p in enumerate(who) if p in test]
        _, impostor = cal.all_pairs_scores(matrix[c], [who[i] for i in c])
        tail = cal.impostor_tail_from_scores(impostor, "pack", "half")
        genuine = planner.GenuineCurve.from_scores(
            planner.import_genuine_scores(matrix[c], [who[i] for i in c]), "pack", "half", "import"
        )
        floor = tail.threshold_for_fmr(base_settings.review_floor_fmr)

        def review(n: int, tail: cal.ImpostorTail = tail, floor: float = floor) -> float:
            s = base_settings
            return cal.dedup_thresholds(tail, n, s.target_fpir, s.duplicate_fpir, floor).review

        test_ids = [who[i] for i in t]
        measured = cal.simulate_dedup(matrix[t], test_ids, review)
        seen: set[str] = set()
        dups: list[int] = []
        new: list[int] = []
        for position, person in enumerate(test_ids):
            (dups if person in seen else new).append(position)
            seen.add(person)
        recall, false_alarms = planner.predict_import(tail, genuine, dups, new, review)
        low, high = wilson(measured.duplicates_flagged, measured.duplicates)
        assert low <= recall <= high, (recall, measured.recall)
        low, high = wilson(measured.new_people_flagged, measured.new_people)
        assert low <= false_alarms <= high, (false_alarms, measured.false_alarm_rate)
