"""Can another person's photos take over a record through `records add-photo`? Measures the
policy's 1:1 rule against the record's centroid alone, and anchored to its enrollment photo too
(record_templates.plan_addition, which refuses `no_match_with_enrollment_photo`).

    python bench/template_drift.py --cache artifacts/lfw-templates.npz [--people 150]

Templates: a `face-dedup calibrate --cache` file of the LFW development photos (as for
bench/multi_template.py). For each ordered pair of people (A, B) with 3 or more photos: A's
record is A's first photo; B, the attacker, offers up to 6 of their photos and adds the one
that scores highest against the record, as long as one passes; then again (a record of up to
3). Reported: how many pairs got 0, 1 or 2 of B's photos in; and for each person, whether
their own 2nd and 3rd photos are accepted (the cost to genuine users). The verify threshold
is the pack's at FACE_DEDUP_VERIFY_FMR (default 1e-4), the score offsets are the policy's.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_dedup.bootstrap import load_tail
from face_dedup.models.custom import find_pack
from face_dedup.record_templates import calibrated_score, centroid
from face_dedup.settings import Settings

F32 = NDArray[np.float32]


def _accepts(record: list[F32], photo: F32, threshold: float, anchored: bool) -> bool:
    score = calibrated_score(float(centroid(record) @ photo), len(record))
    return score >= threshold and (not anchored or float(record[0] @ photo) >= threshold)


def attack(record_photo: F32, offered: list[F32], threshold: float, anchored: bool) -> int:
    """How many of the attacker's photos get into the record (at most 2)."""
    record, left = [record_photo], list(offered)
    for _ in range(2):
        fits = [
            (calibrated_score(float(centroid(record) @ p), len(record)), i)
            for i, p in enumerate(left)
            if _accepts(record, p, threshold, anchored)
        ]
        if not fits:
            break
        record.append(left.pop(max(fits)[1]))
    return len(record) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--people", type=int, default=150, help="first N people (sorted) with 3+ photos")
    args = parser.parse_args()
    with np.load(args.cache, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
        pack_id = str(saved["model_pack"])
    settings = Settings.load()
    threshold = load_tail(settings, find_pack(pack_id, settings.models_dir)).threshold_for_fmr(
        settings.verify_fmr
    )
    photos: dict[str, list[F32]] = defaultdict(list)
    for name, vector in sorted(zip(names, vectors, strict=True), key=lambda x: x[0]):
        photos[name.split("/")[-2]].append(vector)
    people = [p for p in sorted(photos) if len(photos[p]) >= 3][: args.people]
    print(f"{pack_id}: {len(people)} people, verify threshold {threshold:.4f}")
    for anchored in (False, True):
        counts = [0, 0, 0]
        for a in people:
            for b in people:
                if a != b:
                    counts[attack(photos[a][0], photos[b][:6], threshold, anchored)] += 1
        genuine = [0, 0]
        for a in people:
            record = [photos[a][0]]
            for k, photo in enumerate(photos[a][1:3]):
                if _accepts(record, photo, threshold, anchored):
                    record.append(photo)
                    genuine[k] += 1
        rule = "centroid and enrollment photo" if anchored else "centroid alone"
        print(
            f"{rule}: impostor pairs with 0/1/2 photos added {counts}; "
            f"genuine 2nd photo accepted {genuine[0]}/{len(people)}, 3rd {genuine[1]}/{len(people)}"
        )


if __name__ == "__main__":
    main()
