"""Peers side by side, in one run on one machine: our default pipeline against the chain many
users would pick instead, face_recognition 1.3.0 on dlib (HOG detector, upsampled once; the
5-point "small" landmark model; the ResNet descriptor, one jitter; score = -euclidean distance).

    python bench/peers.py [--shared ../shared/data/faces] [--pairs-per-fold 600] [--json out.json]

The LFW development pairs (first N per fold, half same-person, half different) are scored by
both chains; 5-fold accuracy as in bench/accuracy.py (a pair with an unusable photo counts as
a non-match). Photos alternate between the chains one by one, so the machine's load affects
both alike; per-photo wall and thread-CPU time (one thread each: onnxruntime/OpenCV here,
dlib in its own process). Ratios are the peer's over ours.

The peer runs in a separate process: importing face_recognition sets Pillow's
LOAD_TRUNCATED_IMAGES=True for the whole process, which must never reach our decoder.
Install it as the optional extra: `pip install '.[peers]'` (dlib-bin, face-recognition-models)
then `pip install --no-deps face-recognition==1.3.0` (its metadata asks for the source `dlib`,
which dlib-bin provides prebuilt).

`--index` (faiss flat search beside the embedded index at 100k and 1M) is the other half of
issue 12's peer comparison, owned by its search work: see bench/search_compact.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

PEER_WORKER = "--peer-worker"


def peer_worker() -> int:
    """One photo path per stdin line -> one JSON line: the 128-d encoding of the largest face
    (or null) and the time taken. Runs only in the child process."""
    import face_recognition

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        path = line.strip()
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            image = face_recognition.load_image_file(path)
            boxes = face_recognition.face_locations(image)  # hog, upsample 1 (the defaults)
            encoding = None
            if boxes:
                largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
                (encoding,) = face_recognition.face_encodings(image, [largest])
        except Exception as exc:  # reported, not fatal: counts as an unusable photo
            print(json.dumps({"error": type(exc).__name__}), flush=True)
            continue
        print(
            json.dumps(
                {
                    "encoding": None if encoding is None else [float(v) for v in encoding],
                    "wall": time.perf_counter() - wall,
                    "cpu": time.thread_time() - cpu,
                }
            ),
            flush=True,
        )
    return 0


def select_pairs(root: Path, per_fold: int) -> list[dict[str, str]]:
    with (root / "lfw_pairs_dev.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    chosen: list[dict[str, str]] = []
    for fold in sorted({r["fold"] for r in rows}):
        for same in ("1", "0"):
            group = [r for r in rows if r["fold"] == fold and r["same"] == same]
            chosen += group[: per_fold // 2]
    return chosen


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == PEER_WORKER:
        return peer_worker()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--pairs-per-fold", type=int, default=600)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--index", action="store_true", help="see bench/search_compact.py")
    args = parser.parse_args()
    if args.index:
        print("faiss flat vs the embedded index: run bench/search_compact.py", file=sys.stderr)
        return 2

    import cv2

    from face_dedup import calibration as cal
    from face_dedup.bootstrap import build_engine
    from face_dedup.settings import Settings
    from face_dedup.vision.pipeline import FaceTemplate

    cv2.setNumThreads(1)
    root = args.shared.resolve()
    pairs = select_pairs(root, args.pairs_per_fold)
    photos = sorted({r[k] for r in pairs for k in ("file1", "file2")})
    engine = build_engine(Settings.load(), threads=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    peer = subprocess.Popen(
        [sys.executable, __file__, PEER_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert peer.stdin is not None and peer.stdout is not None
    if not json.loads(peer.stdout.readline()).get("ready"):
        raise SystemExit("the peer worker did not start (is face_recognition installed? see --help)")
    load_before = os.getloadavg()
    ours: dict[str, NDArray[np.float32]] = {}
    theirs: dict[str, NDArray[np.float64]] = {}
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in ("ours", "peer")}
    for photo in photos:
        path = root / photo
        wall, cpu = time.perf_counter(), time.thread_time()
        result = engine.process(path.read_bytes())
        times["ours"]["cpu"].append(time.thread_time() - cpu)
        times["ours"]["wall"].append(time.perf_counter() - wall)
        if isinstance(result, FaceTemplate):
            ours[photo] = result.embedding
        peer.stdin.write(f"{path}\n")
        peer.stdin.flush()
        answer = json.loads(peer.stdout.readline())
        if "wall" in answer:
            times["peer"]["cpu"].append(answer["cpu"])
            times["peer"]["wall"].append(answer["wall"])
        if answer.get("encoding") is not None:
            theirs[photo] = np.asarray(answer["encoding"], dtype=np.float64)
    peer.stdin.close()
    peer.wait(timeout=60)

    same = np.array([r["same"] == "1" for r in pairs])
    folds = [int(r["fold"]) for r in pairs]

    def accuracy(scores: list[float]) -> tuple[float, float]:
        return cal.kfold_accuracy(np.asarray(scores, dtype=np.float64), same, folds)

    ours_scores = [
        float(ours[r["file1"]] @ ours[r["file2"]]) if r["file1"] in ours and r["file2"] in ours else -1.0
        for r in pairs
    ]
    peer_scores = [
        -float(np.linalg.norm(theirs[r["file1"]] - theirs[r["file2"]]))
        if r["file1"] in theirs and r["file2"] in theirs
        else -10.0
        for r in pairs
    ]
    ours_acc, ours_std = accuracy(ours_scores)
    peer_acc, peer_std = accuracy(peer_scores)
    ours_cpu = statistics.median(times["ours"]["cpu"])
    peer_cpu = statistics.median(times["peer"]["cpu"])
    report = {
        "pairs": len(pairs),
        "photos": len(photos),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "ours": {
            "chain": f"face-dedup {engine.pack.id}",
            "photos_without_template": len(photos) - len(ours),
            "kfold_accuracy": round(ours_acc, 4),
            "kfold_std": round(ours_std, 4),
            "wall": percentiles(times["ours"]["wall"]),
            "thread_cpu": percentiles(times["ours"]["cpu"]),
        },
        "peer": {
            "chain": "face_recognition 1.3.0 / dlib (hog, 5-point, resnet, 1 jitter)",
            "photos_without_template": len(photos) - len(theirs),
            "kfold_accuracy": round(peer_acc, 4),
            "kfold_std": round(peer_std, 4),
            "wall": percentiles(times["peer"]["wall"]),
            "thread_cpu": percentiles(times["peer"]["cpu"]),
        },
        "ratios_peer_over_ours": {
            # None when ours made no error on the sample (then see the accuracy difference)
            "error_rate": round((1 - peer_acc) / (1 - ours_acc), 2) if ours_acc < 1 else None,
            "accuracy_points_ours_minus_peer": round(100 * (ours_acc - peer_acc), 2),
            "cpu_per_photo_median": round(peer_cpu / ours_cpu, 2),
        },
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
