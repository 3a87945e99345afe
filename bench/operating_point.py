"""Check the operating-point planner against a real import, and write the shipped genuine curve.

    python bench/operating_point.py --cache artifacts/lfw-templates.npz
    python bench/operating_point.py --cache artifacts/lfw-templates.npz --write-curve

The templates come from a `face-dedup calibrate --cache` file (LFW development photos, default
pack). People are split in two halves (sorted names, alternating). On each half the impostor
tail and the genuine curve ("import" kind: each later photo's best score against the person's
earlier photos) are measured; the OTHER half is imported in path order into an empty registry
(calibration.simulate_dedup, the review threshold in force at each gallery size) and the
planner's prediction for that same import (planner.predict_import, from the curves alone) is
set beside it with a 95% Wilson interval for the measured rates.

--write-curve writes src/face_dedup/models/genuine_<pack>.json from all the photos ("pairs"
kind: every same-person pair, photos that yielded no template scoring as misses).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup import calibration as cal
from face_dedup import planner
from face_dedup.decision import DecisionPolicy
from face_dedup.settings import Settings


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def load(cache: Path) -> tuple[str, list[str], NDArray[np.float32], list[str]]:
    with np.load(cache, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        return (
            str(saved["model_pack"]),
            names,
            saved["vectors"].astype(np.float32),
            [str(f) for f in saved["failed"]],
        )


def person(name: str) -> str:
    return Path(name).parent.name


def check(
    pack: str,
    names: list[str],
    vectors: NDArray[np.float32],
    calib: set[str],
    test: set[str],
    settings: Settings,
) -> dict[str, Any]:
    c_rows = [i for i, n in enumerate(names) if person(n) in calib]
    t_rows = [i for i, n in enumerate(names) if person(n) in test]
    c_ids = [person(names[i]) for i in c_rows]
    t_ids = [person(names[i]) for i in t_rows]
    _, impostor = cal.all_pairs_scores(vectors[c_rows], c_ids)
    tail = cal.impostor_tail_from_scores(impostor, pack, "half")
    genuine = planner.GenuineCurve.from_scores(
        planner.import_genuine_scores(vectors[c_rows], c_ids), pack, "half", "import"
    )
    policy = DecisionPolicy.from_settings(settings, tail)  # the service's rule, floors and all

    def review(n: int) -> float:
        return policy.thresholds(n).review

    measured = cal.simulate_dedup(vectors[t_rows], t_ids, review)
    seen: set[str] = set()
    dups: list[int] = []
    new: list[int] = []
    for position, who in enumerate(t_ids):
        (dups if who in seen else new).append(position)
        seen.add(who)
    recall, fa = planner.predict_import(tail, genuine, dups, new, review)
    return {
        "calibration_people": len(calib),
        "imported_photos": len(t_rows),
        "measured_recall": measured.recall,
        "recall_ci95": wilson(measured.duplicates_flagged, measured.duplicates),
        "predicted_recall": recall,
        "measured_false_alarms": measured.false_alarm_rate,
        "false_alarms_ci95": wilson(measured.new_people_flagged, measured.new_people),
        "predicted_false_alarms": fa,
        "duplicates": measured.duplicates,
        "new_people": measured.new_people,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--write-curve", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pack, names, vectors, failed = load(args.cache)
    settings = Settings.load(data_dir=Path("/nonexistent-plan-bench"))
    people = sorted({person(n) for n in names})
    halves = (set(people[0::2]), set(people[1::2]))
    results = {
        "A calibrates, B imported": check(pack, names, vectors, halves[0], halves[1], settings),
        "B calibrates, A imported": check(pack, names, vectors, halves[1], halves[0], settings),
        "all calibrate, all imported (in-sample)": check(
            pack, names, vectors, set(people), set(people), settings
        ),
    }
    for label, r in results.items():
        rc, fc = r["recall_ci95"], r["false_alarms_ci95"]
        print(
            f"{label}: recall measured {r['measured_recall']:.4f} CI {rc[0]:.4f}-{rc[1]:.4f}"
            f" predicted {r['predicted_recall']:.4f} | false alarms measured"
            f" {r['measured_false_alarms']:.4f} CI {fc[0]:.4f}-{fc[1]:.4f}"
            f" predicted {r['predicted_false_alarms']:.4f}"
            f" ({r['duplicates']} duplicates, {r['new_people']} new people)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.write_curve:
        all_names = names + failed
        matrix = np.concatenate([vectors, np.zeros((len(failed), vectors.shape[1]), np.float32)])
        usable = np.array([True] * len(names) + [False] * len(failed))
        genuine, _ = cal.all_pairs_scores(matrix, [person(n) for n in all_names], usable, -1.0)
        curve = planner.GenuineCurve.from_scores(
            genuine, pack, f"LFW dev folds 0-4, all same-person pairs of {len(all_names)} images", "pairs"
        )
        target = Path(planner.__file__).parent / "models" / f"genuine_{pack}.json"
        target.write_text(curve.to_json() + "\n", encoding="utf-8")
        print(f"wrote {target} ({curve.scores} genuine pairs)")


if __name__ == "__main__":
    main()
