"""May bf16 templates share the default pack's partition with fp32 ones? (issue 12)

    python bench/bf16_partition.py [--cache /tmp/int8-variants] [--shared ../shared/data/faces]
        [--noise-floor] [--no-plain] [--json FILE]

Why: a runtime that embeds with OpenVINO in bfloat16 on CPUs that report BF16, and with
onnxruntime fp32 elsewhere, keeps the SAME pack. A registry then holds templates of both
(old fp32 records, a second machine, the cloud), compared at the pack's SHIPPED thresholds,
which were calibrated on fp32 templates. bench/bf16_probe.py scored each precision against its
own impostor tail; this scores them against the shipped one, and mixed.

On the held-out LFW crops cached by bench/int8_variants.py (the default pack's alignment), with
fp32 templates made by the shipped path (onnxruntime; for the flip pack the cached templates,
checked bit for bit) and bf16 ones made with the product's OpenVINO configuration
(`PRODUCT_CONFIG`: one thread, one stream, latency hint, no pinning; face and mirror each run
alone, each unit length, summed, unit length again), it prints as JSON:

1. FAR and TAR at every threshold the decision policy derives from the shipped calibration and
   settings (verify, review and auto-link bands at several gallery sizes, with their floors) on
   the LFW dev pairs and on all pairs of the LFW images, and bench/accuracy.py's 1:N import
   (recall and false alarms at the review band, the same at the auto-link band) for fp32-fp32,
   bf16-bf16 and mixed (fp32 x bf16, bf16 x fp32; in 1:N: registry fp32 and photos bf16, the
   reverse, and every other record made by each), differences in points against fp32.
2. Per pair, |mixed - fp32| and |bf16 - fp32| (median, p99, max) and the decisions that flip at
   each threshold, with the pairs' true labels (and, in 1:N, the imports whose outcome flips).
3. Whether bf16 outputs are bit-identical run to run, after a fresh compile, in a fresh
   process and with 2 inference threads (a re-run import must find the same templates); and
   whether a batch of 2 (face and mirror in one run) gives the bits of two single runs.
4. The shipped calibration re-derived from bf16 (and mixed) impostor scores the way it was made
   (bench/accuracy.py --write-calibration: calibration.impostor_tail_from_scores over all pairs of
   the LFW dev images; the fp32 re-derivation is checked equal to the shipped file) and how far
   each operating point's threshold would move. Nothing is written: a measurement, not a
   calibration.

The non-flip pack `yunet-sface-v1` (same model, the face alone) gets 1-2 too, from the same
runs (its fp32 templates from onnxruntime here); 3 covers both, the runs being the same.
`--noise-floor` adds fp32 templates of the crops changed by -1/0/+1 grey level at random
(bench/int8_variants.py's noise row, seed 1) scored the same way: a change nobody would call a
loss, to set the bf16 figures beside. Needs openvino (skipped without it); writes nothing in the
repository.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup import calibration as cal
from face_dedup.bootstrap import load_tail
from face_dedup.decision import DecisionPolicy
from face_dedup.models.registry import YUNET_SFACE, YUNET_SFACE_FLIP, ModelPack, verified_path
from face_dedup.record_templates import SAME_PHOTO_SCORE
from face_dedup.settings import Settings
from face_dedup.vision.embed import SFaceEmbedder, create_session

Matrix = NDArray[np.float32]

# The runtime configuration the product compiles SFace with on a BF16 CPU (issue 12's lead).
PRODUCT_CONFIG: dict[str, Any] = {
    "INFERENCE_PRECISION_HINT": "bf16",
    "INFERENCE_NUM_THREADS": 1,
    "NUM_STREAMS": 1,
    "PERFORMANCE_HINT": "LATENCY",
    "ENABLE_CPU_PINNING": False,
}
GALLERY_SIZES = (1, 100, 3_809, 100_000, 1_000_000, 10_000_000)
DETERMINISM_CROPS = 200  # every 19th LFW crop, as bench/bf16_probe.py times them


# -- templates ------------------------------------------------------------------------------


def unit_rows(vectors: Matrix) -> Matrix:
    """Each row to unit length the way SFaceEmbedder._run does it (row by row, same bits)."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    for row in out:
        row /= float(np.linalg.norm(row))
    return out


def flip_templates(face: Matrix, mirror: Matrix) -> Matrix:
    """The flip pack's rule on unit face and mirror vectors, as SFaceEmbedder.embed does it."""
    rows = []
    for f, m in zip(face, mirror, strict=True):
        vector = f + m
        rows.append(np.asarray(vector / np.linalg.norm(vector), dtype=np.float32))
    return np.stack(rows)


class OpenVinoRuns:
    """SFace compiled by OpenVINO; `units` returns one unit vector per crop (one run each)."""

    def __init__(self, model_path: Path, config: dict[str, Any], batch: int = 1) -> None:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(model_path))
        if batch != 1:
            model.reshape([batch, 3, 112, 112])
        compiled = core.compile_model(model, "CPU", config)
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self.batch = batch

    def raw(self, crops: NDArray[np.uint8]) -> Matrix:
        """NHWC RGB crops (len == batch) in, the model's output rows."""
        blob = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        result = self._request.infer({0: blob})[self._output]
        return np.array(result, dtype=np.float32).reshape(len(crops), -1)

    def units(self, crops: NDArray[np.uint8]) -> Matrix:
        rows = [self.raw(crops[i : i + self.batch]) for i in range(0, len(crops), self.batch)]
        return unit_rows(np.concatenate(rows))


def mirrored(crops: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(crops[:, :, ::-1])


# -- scores and decisions -----------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float


def operating_points(policy: DecisionPolicy, gallery_sizes: Sequence[int]) -> list[OperatingPoint]:
    """Every threshold the decision policy derives from the pack's tail and the settings: 1:1
    verify, and the review and auto-link bands (floors included) at each gallery size."""
    points = [OperatingPoint(f"verify (FMR {policy.verify_fmr:g})", policy.verify_threshold)]
    for size in gallery_sizes:
        bands = policy.thresholds(size)
        points.append(OperatingPoint(f"review @ {size:,}", bands.review))
        points.append(OperatingPoint(f"auto-link @ {size:,}", bands.duplicate))
    return points


def spread(values: NDArray[np.floating]) -> dict[str, float]:
    absolute = np.abs(np.asarray(values, dtype=np.float64))
    return {
        "median": float(f"{np.median(absolute):.3g}"),
        "p99": float(f"{np.quantile(absolute, 0.99):.3g}"),
        "max": float(f"{absolute.max():.3g}"),
    }


def rates(scores: NDArray[np.floating], genuine: NDArray[np.bool_], threshold: float) -> dict[str, float]:
    accepted = scores >= threshold
    return {
        "tar": round(100 * float(accepted[genuine].mean()), 4),
        "far": round(100 * float(accepted[~genuine].mean()), 6),
    }


def flips(
    scores: NDArray[np.floating],
    reference: NDArray[np.floating],
    genuine: NDArray[np.bool_],
    threshold: float,
) -> dict[str, int]:
    """Pair decisions that differ from the reference's at `threshold`, by true label and way."""
    now, before = scores >= threshold, reference >= threshold
    return {
        "genuine_lost": int(np.sum(genuine & before & ~now)),
        "genuine_gained": int(np.sum(genuine & ~before & now)),
        "impostor_gained": int(np.sum(~genuine & ~before & now)),
        "impostor_lost": int(np.sum(~genuine & before & ~now)),
    }


@dataclass(frozen=True)
class Imports:
    """bench/accuracy.py's 1:N import, one row per photo: whether its person was
    already enrolled, and the score that decides it (the best earlier photo of the same person
    for a duplicate, the best earlier photo of anyone for a new person)."""

    duplicate: NDArray[np.bool_]
    score: NDArray[np.float32]
    review: NDArray[np.float64]
    auto_link: NDArray[np.float64]

    def summary(self) -> dict[str, float]:
        new = ~self.duplicate
        return {
            "recall": round(
                100 * float(np.mean(self.score[self.duplicate] >= self.review[self.duplicate])), 4
            ),
            "false_alarms": round(100 * float(np.mean(self.score[new] >= self.review[new])), 4),
            "auto_link_recall": round(
                100 * float(np.mean(self.score[self.duplicate] >= self.auto_link[self.duplicate])), 4
            ),
            "false_auto_links": round(100 * float(np.mean(self.score[new] >= self.auto_link[new])), 4),
        }

    def outcome(self) -> NDArray[np.int8]:
        """0 enrolled, 1 review, 2 auto-link (on the deciding score)."""
        return (self.score >= self.review).astype(np.int8) + (self.score >= self.auto_link).astype(np.int8)


def simulate_imports(
    probes: Matrix,
    gallery: Matrix,
    identities: Sequence[str],
    bands: Callable[[int], tuple[float, float]],
) -> Imports:
    """calibration.simulate_dedup with the photo's template (`probes`) and the enrolled ones
    (`gallery`) from different runtimes; `bands(n)`: the review and auto-link thresholds for n
    enrolled faces. With probes == gallery its recall and false alarms are simulate_dedup's."""
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    count = len(labels)
    # The first photo is a new person against an empty registry: never flagged (as simulate_dedup).
    duplicate = np.zeros(count, dtype=bool)
    score = np.full(count, -np.inf, dtype=np.float32)
    review = np.full(count, np.inf)
    auto_link = np.full(count, np.inf)
    chunk = 1024
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        block = probes[start:stop] @ gallery[:stop].T
        for row in range(stop - start):
            index = start + row
            if index == 0:
                continue
            previous = block[row, :index]
            same = labels[:index] == labels[index]
            duplicate[index] = bool(same.any())
            score[index] = previous[same].max() if same.any() else previous.max()
            review[index], auto_link[index] = bands(index)
    return Imports(duplicate, score, review, auto_link)


def within(difference: float, points: float = 0.1) -> bool:
    return abs(difference) <= points + 1e-9


# -- one pack --------------------------------------------------------------------------------------


def pack_report(
    pack: ModelPack,
    names: list[str],
    fp32: Matrix,
    bf16: Matrix,
    dev_pairs: list[dict[str, str]],
    extra: dict[str, Matrix],
) -> dict[str, Any]:
    """Items 1, 2 and 4 for one pack; `extra`: more fp32-side template sets to score like bf16."""
    settings = Settings.load(model_pack=pack.id)
    tail = load_tail(settings, pack)
    policy = DecisionPolicy.from_settings(settings, tail)
    points = operating_points(policy, GALLERY_SIZES)
    people = [n.split("/")[1] for n in names]
    labels = np.unique(np.asarray(people), return_inverse=True)[1]
    upper = np.triu_indices(len(names), k=1)
    genuine_all = labels[upper[0]] == labels[upper[1]]

    index = {n: i for i, n in enumerate(names)}
    usable = [r for r in dev_pairs if r["file1"] in index and r["file2"] in index]
    left = np.array([index[r["file1"]] for r in usable])
    right = np.array([index[r["file2"]] for r in usable])
    genuine_dev = np.array([r["same"] == "1" for r in usable])

    # (first side, second side): a pair's first image from one runtime, its second from the other.
    modes: dict[str, tuple[Matrix, Matrix]] = {
        "fp32": (fp32, fp32),
        "bf16": (bf16, bf16),
        "mixed fp32 x bf16": (fp32, bf16),
        "mixed bf16 x fp32": (bf16, fp32),
    }
    for name, other in extra.items():
        modes[name] = (other, other)

    def dev_scores(a: Matrix, b: Matrix) -> NDArray[np.float32]:
        return np.asarray(np.einsum("ij,ij->i", a[left], b[right]), dtype=np.float32)

    def all_scores(a: Matrix, b: Matrix) -> NDArray[np.float32]:
        return (a @ b.T)[upper].astype(np.float32)

    reference_dev = dev_scores(fp32, fp32)
    reference_all = all_scores(fp32, fp32)
    report: dict[str, Any] = {
        "model_pack": pack.id,
        "calibration": tail.source,
        "dev_pairs_scored": len(usable),
        "dev_pairs_genuine / impostor": [int(genuine_dev.sum()), int((~genuine_dev).sum())],
        "all_pairs_genuine / impostor": [int(genuine_all.sum()), int((~genuine_all).sum())],
        "operating_points": {p.name: round(p.threshold, 5) for p in points},
        "pairs": {},
    }
    tails: dict[str, cal.ImpostorTail] = {}
    for mode, (a, b) in modes.items():
        entry: dict[str, Any] = {}
        for tag, scores, reference, genuine in (
            ("dev", dev_scores(a, b), reference_dev, genuine_dev),
            ("all", all_scores(a, b), reference_all, genuine_all),
        ):
            rows = {p.name: rates(scores, genuine, p.threshold) for p in points}
            entry[tag] = {"rates_percent": rows}
            if mode != "fp32":
                base = report["pairs"]["fp32"][tag]["rates_percent"]
                difference = {
                    name: {k: round(v - base[name][k], 4) for k, v in row.items()}
                    for name, row in rows.items()
                }
                entry[tag]["difference_points"] = difference
                entry[tag]["largest_difference_points"] = max(
                    abs(v) for row in difference.values() for v in row.values()
                )
                entry[tag]["score_change_vs_fp32"] = spread(scores - reference)
                flipped = {p.name: flips(scores, reference, genuine, p.threshold) for p in points}
                entry[tag]["flips"] = {name: found for name, found in flipped.items() if any(found.values())}
            if tag == "all":
                tails[mode] = cal.impostor_tail_from_scores(scores[~genuine], pack.id, mode)
        report["pairs"][mode] = entry

    # 4: the calibration re-derived from each mode's impostors, as bench/accuracy.py writes it.
    shipped = dict(tail.points)
    rederived: dict[str, Any] = {}
    for mode, found in tails.items():
        moved = {f"{x:g}": round(y - shipped[x], 5) for x, y in found.points if x in shipped}
        rederived_policy = DecisionPolicy.from_settings(settings, found)
        rederived[mode] = {
            "points_equal_shipped": tuple(found.points) == tuple(tail.points),
            "point_moves": moved,
            "largest_point_move": max(abs(v) for v in moved.values()),
            "operating_point_moves": {
                p.name: round(q.threshold - p.threshold, 5)
                for p, q in zip(points, operating_points(rederived_policy, GALLERY_SIZES), strict=True)
            },
        }
    report["calibration_rederived"] = rederived

    # The 1:N import: every LFW photo its own application, in order (bench/accuracy.py).
    def bands(size: int) -> tuple[float, float]:
        found = policy.thresholds(size)
        return found.review, found.duplicate

    alternating = np.where((np.arange(len(names)) % 2 == 1)[:, None], bf16, fp32).astype(np.float32)
    scenarios: dict[str, tuple[Matrix, Matrix]] = {
        "fp32": (fp32, fp32),
        "bf16": (bf16, bf16),
        "fp32 registry, bf16 photos": (bf16, fp32),
        "bf16 registry, fp32 photos": (fp32, bf16),
        "every other record bf16": (alternating, alternating),
    }
    for name, other in extra.items():
        scenarios[name] = (other, other)
    base_run = simulate_imports(fp32, fp32, people, bands)
    check = cal.simulate_dedup(fp32, people, lambda n: policy.thresholds(n).review)
    one_to_n: dict[str, Any] = {
        "imports": len(names),
        "duplicates / new people": [int(base_run.duplicate.sum()), int((~base_run.duplicate).sum())],
        "fp32 equals calibration.simulate_dedup": [
            round(100 * check.recall, 4),
            round(100 * check.false_alarm_rate, 4),
        ]
        == [base_run.summary()["recall"], base_run.summary()["false_alarms"]],
    }
    base_summary, base_outcome = base_run.summary(), base_run.outcome()
    for name, (probes, gallery) in scenarios.items():
        run = base_run if name == "fp32" else simulate_imports(probes, gallery, people, bands)
        summary = run.summary()
        row: dict[str, Any] = {"percent": summary}
        if name != "fp32":
            changed = run.outcome() != base_outcome
            row["difference_points"] = {k: round(v - base_summary[k], 4) for k, v in summary.items()}
            row["outcomes_flipped"] = {
                "duplicates": int(np.sum(changed & run.duplicate)),
                "new_people": int(np.sum(changed & ~run.duplicate)),
            }
            row["deciding_score_change"] = spread(run.score[1:] - base_run.score[1:])
        one_to_n[name] = row
    report["one_to_n"] = one_to_n
    largest_pairs = {
        mode: max(entry[tag]["largest_difference_points"] for tag in ("dev", "all"))
        for mode, entry in report["pairs"].items()
        if mode != "fp32"
    }
    largest_1n = {
        name: max(abs(v) for v in row["difference_points"].values())
        for name, row in one_to_n.items()
        if isinstance(row, dict) and "difference_points" in row
    }
    bf16_sides = [m for m in largest_pairs if "bf16" in m] + [s for s in largest_1n if "bf16" in s]
    report["verdict"] = {
        "largest_difference_points_pairs": largest_pairs,
        "largest_difference_points_one_to_n": largest_1n,
        "bf16_and_mixed_within_0.1_point_everywhere": all(
            within({**largest_pairs, **largest_1n}[name]) for name in bf16_sides
        ),
    }
    return report


# -- determinism ------------------------------------------------------------------------------------


def determinism(
    model_path: Path, crops: NDArray[np.uint8], script: Path, cache: Path, limit: int
) -> dict[str, Any]:
    """Item 3 on `crops` (face and mirror each): are the bf16 outputs the same bits?"""
    both = np.concatenate([crops, mirrored(crops)])
    first = OpenVinoRuns(model_path, PRODUCT_CONFIG)
    reference = np.concatenate([first.raw(both[i : i + 1]) for i in range(len(both))])
    again = np.concatenate([first.raw(both[i : i + 1]) for i in range(len(both))])
    fresh = OpenVinoRuns(model_path, PRODUCT_CONFIG)
    recompiled = np.concatenate([fresh.raw(both[i : i + 1]) for i in range(len(both))])
    two = OpenVinoRuns(model_path, PRODUCT_CONFIG | {"INFERENCE_NUM_THREADS": 2})
    two_threads = np.concatenate([two.raw(both[i : i + 1]) for i in range(len(both))])
    batched = OpenVinoRuns(model_path, PRODUCT_CONFIG, batch=2)
    pairs = np.concatenate(
        [batched.raw(np.stack([c, m])) for c, m in zip(crops, mirrored(crops), strict=True)]
    )
    as_pairs = np.concatenate([reference[: len(crops)][:, None], reference[len(crops) :][:, None]], axis=1)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "child.npy"
        child_args = ["--cache", str(cache), "--limit", str(limit), "--determinism-child", str(out)]
        subprocess.run([sys.executable, str(script), *child_args], check=True)
        child = np.load(out)

    def same(a: Matrix, b: Matrix) -> dict[str, Any]:
        rows = np.all(a.view(np.uint32) == b.view(np.uint32), axis=1)
        return {
            "bit_identical_rows": f"{int(rows.sum())}/{len(rows)}",
            "largest_difference": float(np.abs(a - b).max()),
        }

    return {
        "runs": len(both),
        "same request, second pass": same(reference, again),
        "fresh compile": same(reference, recompiled),
        "fresh process": same(reference, child),
        "2 inference threads": same(reference, two_threads),
        "batch of 2 (face, mirror) vs two runs": same(as_pairs.reshape(-1, reference.shape[1]), pairs),
    }


def determinism_child(cache: Path, out: Path, limit: int) -> None:
    settings = Settings.load(model_pack=YUNET_SFACE_FLIP.id)
    crops = np.load(cache / "lfw.npz")["crops"][: limit or None][::19][:DETERMINISM_CROPS]
    both = np.concatenate([crops, mirrored(crops)])
    runs = OpenVinoRuns(verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder), PRODUCT_CONFIG)
    np.save(out, np.concatenate([runs.raw(both[i : i + 1]) for i in range(len(both))]))


def below(cosines: NDArray[np.floating], score: float) -> dict[str, Any]:
    return {
        "crops_below": int(np.sum(cosines < score)),
        "of": len(cosines),
        "min": round(float(cosines.min()), 5),
    }


def shipped_runtime(crops: NDArray[np.uint8], expected: Matrix) -> dict[str, Any]:
    """The flip pack's embedder as the product builds it with bf16 asked for by name
    (bootstrap.build_embedder: vision/runtimes.py, face and mirror as one batch of 2, a stream per
    core), called in order and from 2 threads at once: the bits of this script's bf16 templates?"""
    from face_dedup.bootstrap import build_embedder

    settings = Settings.load(model_pack=YUNET_SFACE_FLIP.id, embedder_runtime="openvino-bf16")
    embedder = build_embedder(settings, YUNET_SFACE_FLIP, threads=1)
    in_order = np.stack([embedder.embed(c) for c in crops])
    with ThreadPoolExecutor(2) as pool:
        threaded = np.stack(list(pool.map(embedder.embed, crops)))

    def same(a: Matrix) -> str:
        return f"{int(np.sum(np.all(a.view(np.uint32) == expected.view(np.uint32), axis=1)))}/{len(a)}"

    return {
        "runtime": embedder.runtime,
        "batched": embedder.batched,
        "in order, templates bit-identical to this script's": same(in_order),
        "2 threads at once, bit-identical": same(threaded),
    }


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/int8-variants"))
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument(
        "--noise-floor", action="store_true", help="add fp32 templates of crops +-1 grey level"
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the non-flip pack yunet-sface-v1")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--limit", type=int, default=0, help="the first N LFW crops only (a smoke run)")
    parser.add_argument("--determinism-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import openvino
    except ImportError:
        print("bench/bf16_partition.py skipped: openvino is not installed")
        return 0
    if args.determinism_child:
        determinism_child(args.cache, args.determinism_child, args.limit)
        return 0
    started, cpu_started = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()
    # onnxruntime by name: where `auto` picks bf16, a new cache would otherwise hold bf16 templates.
    settings = Settings.load(model_pack=YUNET_SFACE_FLIP.id, embedder_runtime="onnxruntime")
    root = args.shared.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # a sibling script: its crop cache
    importlib.import_module("int8_variants").cache_crops(root, args.cache, settings)
    lfw = np.load(args.cache / "lfw.npz")
    keep = slice(0, args.limit or None)
    names = [str(n) for n in lfw["names"][keep]]
    crops: NDArray[np.uint8] = lfw["crops"][keep]
    cached: Matrix = lfw["emb"][keep]
    with (root / "lfw_pairs_dev.csv").open() as handle:
        dev_pairs = list(csv.DictReader(handle))
    model_path = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)

    # fp32, the shipped path: onnxruntime, one thread. The face alone is the non-flip pack's
    # template; the flip rule on face and mirror must give the cached flip templates' bits.
    plain_embedder = SFaceEmbedder(create_session(model_path, threads=1), YUNET_SFACE.contract)
    fp32_face = np.stack([plain_embedder.embed(c) for c in crops])
    sample = slice(0, 200)
    fp32_mirror = np.stack([plain_embedder.embed(c) for c in mirrored(crops[sample])])
    flip_embedder = SFaceEmbedder(create_session(model_path, threads=1), YUNET_SFACE_FLIP.contract)
    direct = np.stack([flip_embedder.embed(c) for c in crops[sample]])
    composed = flip_templates(fp32_face[sample], fp32_mirror)
    checks = {
        "flip rule on onnxruntime face + mirror == SFaceEmbedder (200 crops, bits)": bool(
            np.array_equal(composed.view(np.uint32), direct.view(np.uint32))
        ),
        "SFaceEmbedder == cached fp32 templates (200 crops, bits)": bool(
            np.array_equal(direct.view(np.uint32), cached[sample].view(np.uint32))
        ),
    }
    if not all(checks.values()):  # e.g. a cache made by another runtime: no figure would mean anything
        print(json.dumps(checks), file=sys.stderr)
        sys.exit(f"the cached templates in {args.cache} are not onnxruntime fp32's: remove lfw.npz there")
    fp32_seconds = round(time.perf_counter() - started)

    # bf16: the product's configuration, face and mirror each one run.
    bf16_started, bf16_cpu = time.perf_counter(), time.process_time()
    runs = OpenVinoRuns(model_path, PRODUCT_CONFIG)
    bf16_face = runs.units(crops)
    bf16_mirror = runs.units(mirrored(crops))
    bf16_flip = flip_templates(bf16_face, bf16_mirror)
    bf16_timing = {
        "seconds": round(time.perf_counter() - bf16_started),
        "process_cpu_ms_per_run": round(1e3 * (time.process_time() - bf16_cpu) / (2 * len(crops)), 2),
    }

    extra_flip: dict[str, Matrix] = {}
    extra_plain: dict[str, Matrix] = {}
    if args.noise_floor:  # bench/int8_variants.py's fp32_noise_floor crops (seed 1)
        noise = np.random.default_rng(1).integers(-1, 2, crops.shape)
        noisy: NDArray[np.uint8] = np.clip(crops.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        noisy_face = np.stack([plain_embedder.embed(c) for c in noisy])
        noisy_mirror = np.stack([plain_embedder.embed(c) for c in mirrored(noisy)])
        extra_flip["fp32, crops +-1 grey level"] = flip_templates(noisy_face, noisy_mirror)
        extra_plain["fp32, crops +-1 grey level"] = noisy_face

    report: dict[str, Any] = {
        "crops": len(crops),
        "openvino": openvino.get_version(),
        "product_config": PRODUCT_CONFIG,
        "checks": checks,
        "template_cosine_bf16_to_fp32": {
            YUNET_SFACE_FLIP.id: spread(1 - np.sum(bf16_flip * cached, axis=1)) | {"as": "1 - cosine"},
            YUNET_SFACE.id: spread(1 - np.sum(bf16_face * fp32_face, axis=1)) | {"as": "1 - cosine"},
        },
        # record_templates.SAME_PHOTO_SCORE (a photo already held) and the erasure's twin search
        # (usecases/erasure.py, min_score 0.9999) take two templates this close as the same photo.
        "same_photo_rule": {
            "score": SAME_PHOTO_SCORE,
            YUNET_SFACE_FLIP.id: below(np.sum(bf16_flip * cached, axis=1), SAME_PHOTO_SCORE),
            YUNET_SFACE.id: below(np.sum(bf16_face * fp32_face, axis=1), SAME_PHOTO_SCORE),
        },
        "bf16_embedding": bf16_timing,
        "fp32_seconds": fp32_seconds,
    }
    report[YUNET_SFACE_FLIP.id] = pack_report(
        YUNET_SFACE_FLIP, names, cached, bf16_flip, dev_pairs, extra_flip
    )
    if not args.no_plain:
        report[YUNET_SFACE.id] = pack_report(YUNET_SFACE, names, fp32_face, bf16_face, dev_pairs, extra_plain)
    report["determinism"] = determinism(
        model_path, crops[::19][:DETERMINISM_CROPS], Path(__file__).resolve(), args.cache, args.limit
    )
    sample_crops = crops[::19][:DETERMINISM_CROPS]
    report["determinism"]["shipped runtime"] = shipped_runtime(
        sample_crops, bf16_flip[::19][:DETERMINISM_CROPS]
    )
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    report["seconds"] = round(time.perf_counter() - started)
    report["process_cpu_seconds"] = round(time.process_time() - cpu_started)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
