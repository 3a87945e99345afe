"""Accuracy of the face engine on the shared labelled photos (not a test: minutes, real models).

    python bench/accuracy.py [--pack yunet-sface-v1] [--shared ../shared/data/faces]
                             [--write-calibration src/face_dedup/models/calibration_<pack>.json]

Reports 5-fold LFW accuracy on the dev pairs, EER and TAR at FAR on all pairs of the LFW
images, and 1:N de-duplication recall / false alarms when every LFW photo is imported as its
own application, with the review threshold following the target FPIR as the gallery grows.
The de-dup check is also run cross-validated: the impostor tail measured on half of the
people, the registry built from the other half (the shipped calibration uses all of them).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from face_dedup import calibration as cal
from face_dedup.bootstrap import build_engine, load_tail
from face_dedup.decision import DecisionPolicy
from face_dedup.models.registry import get_pack
from face_dedup.planner import GenuineCurve
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--pack", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--target-fpir", type=float, default=None)
    parser.add_argument("--write-calibration", type=Path, default=None)
    parser.add_argument(
        "--write-genuine",
        type=Path,
        default=None,
        help="the pack's genuine curve (models/genuine_<pack>.json)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--runtime",
        default="onnxruntime",
        help="embedder runtime: onnxruntime (the fp32 reference every shipped calibration and the "
        "tables in BENCHMARKS.md come from), openvino-bf16, or auto (what this machine runs)",
    )
    args = parser.parse_args()

    settings = Settings.load(
        model_pack=args.pack, target_fpir=args.target_fpir, embedder_runtime=args.runtime
    )
    pack = get_pack(settings.model_pack)
    engine = build_engine(settings, pack, threads=1)
    root = args.shared.resolve()
    with (root / "lfw_pairs_dev.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    files = sorted(p.relative_to(root).as_posix() for p in (root / "lfw").glob("*/*.jpg"))
    fold_of = {}
    for row in pairs:
        fold_of[row["file1"].split("/")[1]] = int(row["fold"])
        fold_of[row["file2"].split("/")[1]] = int(row["fold"])

    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda f: engine.process((root / f).read_bytes()), files))
    elapsed = time.perf_counter() - started
    embeddings: dict[str, np.ndarray] = {}
    rejected: Counter[str] = Counter()
    for name, result in zip(files, results, strict=True):
        if isinstance(result, FaceTemplate):
            embeddings[name] = result.embedding
        else:
            rejected[result.reason.value] += 1

    # 5-fold accuracy; a pair with an unusable photo is scored as a non-match.
    scores = np.array(
        [
            float(embeddings[r["file1"]] @ embeddings[r["file2"]])
            if r["file1"] in embeddings and r["file2"] in embeddings
            else -1.0
            for r in pairs
        ]
    )
    same = np.array([r["same"] == "1" for r in pairs])
    accuracy, accuracy_std = cal.kfold_accuracy(scores, same, [int(r["fold"]) for r in pairs])

    names = [n for n in files if n in embeddings]
    matrix = np.stack([embeddings[n] for n in names]).astype(np.float32)
    people = [n.split("/")[1] for n in names]
    genuine, impostor = cal.all_pairs_scores(matrix, people)
    eer, eer_threshold = cal.equal_error_rate(genuine, impostor)
    tar = {f"{far:.0e}": cal.tar_at_far(genuine, impostor, far) for far in (1e-2, 1e-3, 1e-4, 1e-5)}
    measured_tail = cal.impostor_tail_from_scores(
        impostor, pack.id, f"LFW dev folds 0-4, all pairs of {len(names)} images"
    )
    if args.write_calibration:
        args.write_calibration.write_text(measured_tail.to_json() + "\n", encoding="utf-8")
    if args.write_genuine:
        source = f"LFW dev folds 0-4, all same-person pairs of {len(names)} images"
        curve = GenuineCurve.from_scores(genuine, pack.id, source, "pairs")
        args.write_genuine.write_text(curve.to_json() + "\n", encoding="utf-8")
    try:
        tail = load_tail(settings, pack)
    except Exception:
        tail = measured_tail

    def review_threshold(size: int, t: cal.ImpostorTail = tail) -> float:
        return DecisionPolicy.from_settings(settings, t).thresholds(size).review  # the service's rule

    dedup = cal.simulate_dedup(matrix, people, review_threshold)

    # Cross-validated: tail from people of folds {0,1} (and {2,3,4}), registry from the others.
    cross = []
    for calib_folds in ({0, 1}, {2, 3, 4}):
        in_calib = np.array([fold_of.get(p, -1) in calib_folds for p in people])
        _, imp = cal.all_pairs_scores(
            matrix[in_calib], [p for p, c in zip(people, in_calib, strict=True) if c]
        )
        half_tail = cal.impostor_tail_from_scores(imp, pack.id, "half")
        sim = cal.simulate_dedup(
            matrix[~in_calib],
            [p for p, c in zip(people, in_calib, strict=True) if not c],
            lambda n, t=half_tail: review_threshold(n, t),
        )
        cross.append(
            {
                "calibrated_on_folds": sorted(calib_folds),
                "duplicates": sim.duplicates,
                "recall": sim.recall,
                "new_people": sim.new_people,
                "false_alarm_rate": sim.false_alarm_rate,
            }
        )

    final = tail.threshold_for_fmr(cal.fmr_for_fpir(settings.target_fpir, len(names)))
    # How the review threshold, and the share of genuine pairs above it, move with the gallery.
    growth = []
    for size in (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000):
        threshold = review_threshold(size)
        growth.append(
            {
                "gallery_size": size,
                "review_threshold": round(threshold, 4),
                "review_fmr": cal.fmr_for_fpir(settings.target_fpir, size),
                "extrapolated": cal.fmr_for_fpir(settings.target_fpir, size) < tail.measured_min_fmr,
                "genuine_pairs_above": round(float(np.mean(genuine >= threshold)), 4),
            }
        )
    report = {
        "model_pack": pack.id,
        "embedder_runtime": engine.embedder_runtime,
        "machine": f"{platform.machine()} {platform.processor() or ''} {platform.python_version()}".strip(),
        "images": len(files),
        "usable": len(names),
        "rejected": dict(rejected),
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "lfw_5fold_accuracy": accuracy,
        "lfw_5fold_std": accuracy_std,
        "pairs": len(pairs),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "tar_at_far": {k: {"tar": v[0], "threshold": v[1]} for k, v in tar.items()},
        "dedup": {
            "target_fpir": settings.target_fpir,
            "duplicates": dedup.duplicates,
            "recall": dedup.recall,
            "new_people": dedup.new_people,
            "false_alarm_rate": dedup.false_alarm_rate,
            "review_threshold_at_full_gallery": final,
        },
        "dedup_cross_validated": cross,
        "threshold_growth": growth,
        "calibration_points": measured_tail.points,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
