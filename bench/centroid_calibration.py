"""Is the single-template calibration still right for a record whose index vector is the
centroid of several templates? Measures the realised false-match rate of the thresholds
calibrated on one-template records when the record is a centroid of T templates.

    python bench/centroid_calibration.py --cache .cache/bench/lfw-templates.npz [--json FILE]

Same people, records and impostor comparisons as bench/multi_template.py (people with 3+ usable
LFW development photos; a record = the person's first T photos; impostors = every photo of every
other person). For each FMR f, people split in halves (sorted names, alternating):
- t1(f): the threshold calibrated on one half's ONE-template records (what `calibrate` ships);
- realised: the FMR of t1(f) on the other half's T-template CENTROID records (ratio to f);
- tT(f): the threshold calibrated on the same half's T-template centroid records, and the
  offset tT(f) - t1(f) a T-template record needs to be held to the same false-match rate;
- recall of the other half's probes against T-template centroid records at t1(f), at
  t1(f) + the offset measured on the calibrating half, and at t1(f) + the fixed offset the
  service applies (record_templates.CENTROID_SCORE_OFFSET), with the realised FMR of each.
Numbers are the mean of the two half-swaps; the offsets are also given per half.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from face_dedup.calibration import threshold_at_far
from face_dedup.record_templates import score_offset
from multi_template import scores  # type: ignore[import-not-found]  # run as bench/centroid_calibration.py

FMRS = (1e-3, 1e-4, 1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--templates", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with np.load(args.cache, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
    who = [Path(n).parent.name for n in names]
    quality = np.ones(len(names), dtype=np.float32)
    counts: dict[str, int] = {}
    for p in who:
        counts[p] = counts.get(p, 0) + 1
    people = sorted(p for p, k in counts.items() if k >= 3)
    halves = (people[0::2], people[1::2])
    _, imp1 = scores(vectors, who, quality, people, "max", 1)
    results: dict[str, Any] = {}
    for t_max in args.templates:
        gen_t, imp_t = scores(vectors, who, quality, people, "centroid", t_max)
        shipped = score_offset(t_max)
        rows: dict[str, Any] = {}
        for f in FMRS:
            per_half = []
            for calib, test in (halves, halves[::-1]):
                single = np.concatenate([imp1[p] for p in calib])
                cent = np.concatenate([imp_t[p] for p in calib])
                if f * len(single) < 5:
                    continue
                t1 = threshold_at_far(single, f)
                tt = threshold_at_far(cent, f)
                offset = tt - t1
                test_imp = np.concatenate([imp_t[p] for p in test])
                test_gen = np.concatenate([gen_t[p] for p in test])
                per_half.append(
                    {
                        "t1": t1,
                        "tT": tt,
                        "offset": offset,
                        "realised_fmr_at_t1": float(np.mean(test_imp >= t1)),
                        "realised_fmr_at_t1_plus_offset": float(np.mean(test_imp >= t1 + offset)),
                        "recall_at_t1": float(np.mean(test_gen >= t1)),
                        "recall_at_t1_plus_offset": float(np.mean(test_gen >= t1 + offset)),
                        # the fixed offset the service applies (record_templates.py)
                        "realised_fmr_product": float(np.mean(test_imp >= t1 + shipped)),
                        "recall_product": float(np.mean(test_gen >= t1 + shipped)),
                        "impostor": len(test_imp),
                    }
                )
            if len(per_half) != 2:
                continue
            mean = {k: float(np.mean([h[k] for h in per_half])) for k in per_half[0]}
            rows[f"{f:g}"] = {"halves": per_half, "mean": mean}
            print(
                f"T={t_max} centroid, FMR {f:g}: realised FMR at the 1-template threshold "
                f"{mean['realised_fmr_at_t1']:.2e} ({mean['realised_fmr_at_t1'] / f:.2f}x); "
                f"offset {per_half[0]['offset']:+.4f} / {per_half[1]['offset']:+.4f}; "
                f"with offset {mean['realised_fmr_at_t1_plus_offset']:.2e} "
                f"({mean['realised_fmr_at_t1_plus_offset'] / f:.2f}x); recall "
                f"{100 * mean['recall_at_t1']:.2f}% -> {100 * mean['recall_at_t1_plus_offset']:.2f}%; "
                f"shipped offset {shipped:+.3f}: FMR {mean['realised_fmr_product']:.2e} "
                f"({mean['realised_fmr_product'] / f:.2f}x), recall {100 * mean['recall_product']:.2f}%",
                flush=True,
            )
        results[f"T={t_max}"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
