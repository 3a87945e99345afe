"""Several templates per person: duplicate recall at fixed false alarms, single vs several.

    python bench/multi_template.py --cache artifacts/lfw-templates.npz [--json FILE]

Templates: a `face-dedup calibrate --cache` file of the LFW development photos (default pack).
Quality measures (for the quality-weighted rules): .cache/bench/lfw-measures.json from
bench/lfw_measures.py; without it those rules are skipped.

People with 3 or more usable photos hold a *record*. For a record of up to T templates:
- genuine: each photo of the person is a probe against the first T of the person's OTHER
  photos (path order), fused into one score by the rule;
- impostor: the record made of the person's first T photos against every photo of every other
  person (about 1.3 million probe-record comparisons).
The threshold for a per-record false-match rate f is taken from the impostor scores, so each
rule and T is compared at the same false alarms per search for the same number of people
(FPIR ~ people x f): more templates raise impostor scores too, and that is paid for here.
Cross-validated: people split in halves (sorted names, alternating); the threshold comes from
one half's records, the recall from the other half's probes, and the other way round.

Rules: max (best template); mean (mean score); centroid (the normalised mean template);
qmean (scores weighted by the detector's confidence of each template's photo); qmax (max over
templates whose photo's detector confidence is at least the record's best minus 0.05).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.calibration import threshold_at_far

F32 = NDArray[np.float32]
ROOT = Path(__file__).resolve().parents[1]
MEASURES = ROOT / ".cache" / "bench" / "lfw-measures.json"
FMRS = (1e-3, 1e-4, 1e-5)
Rule = Callable[[F32, F32, F32], F32]  # (scores probes x templates, template vectors, quality) -> fused


def rule_max(s: F32, t: F32, q: F32) -> F32:
    return np.asarray(s.max(axis=1), dtype=np.float32)


def rule_mean(s: F32, t: F32, q: F32) -> F32:
    return np.asarray(s.mean(axis=1), dtype=np.float32)


def rule_qmean(s: F32, t: F32, q: F32) -> F32:
    w = q / q.sum()
    return np.asarray((s * w).sum(axis=1), dtype=np.float32)


def rule_qmax(s: F32, t: F32, q: F32) -> F32:
    keep = q >= q.max() - 0.05
    return np.asarray(s[:, keep].max(axis=1), dtype=np.float32)


RULES: dict[str, Rule] = {"max": rule_max, "mean": rule_mean, "qmean": rule_qmean, "qmax": rule_qmax}


def fused(probes: F32, templates: F32, quality: F32, rule: str) -> F32:
    if rule == "centroid":
        c = templates.mean(axis=0)
        return np.asarray(probes @ (c / np.linalg.norm(c)), dtype=np.float32)
    return RULES[rule](probes @ templates.T, templates, quality)


def scores(
    vectors: F32, who: list[str], quality: F32, people: list[str], rule: str, t_max: int
) -> tuple[dict[str, F32], dict[str, F32]]:
    """Per record owner: genuine fused scores (each photo as probe) and impostor fused scores."""
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(who):
        rows.setdefault(p, []).append(i)
    labels = np.array(who)
    genuine: dict[str, F32] = {}
    impostor: dict[str, F32] = {}
    for p in people:
        mine = rows[p]
        g = []
        for i in mine:
            others = [j for j in mine if j != i][:t_max]
            g.append(fused(vectors[i : i + 1], vectors[others], quality[others], rule)[0])
        genuine[p] = np.array(g, dtype=np.float32)
        record = mine[:t_max]
        strangers = np.flatnonzero(labels != p)
        impostor[p] = fused(vectors[strangers], vectors[record], quality[record], rule)
    return genuine, impostor


def evaluate(
    genuine: dict[str, F32], impostor: dict[str, F32], calib: list[str], test: list[str]
) -> dict[str, Any]:
    imp = np.concatenate([impostor[p] for p in calib])
    gen = np.concatenate([genuine[p] for p in test])
    test_imp = np.concatenate([impostor[p] for p in test])
    out: dict[str, Any] = {}
    for f in FMRS:
        if f * len(imp) < 5:
            continue
        t = threshold_at_far(imp, f)
        out[f"{f:g}"] = {
            "threshold": t,
            "recall": float(np.mean(gen >= t)),
            "fmr_unseen": float(np.mean(test_imp >= t)),
            "genuine": len(gen),
            "impostor": len(imp),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--templates", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with np.load(args.cache, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
    who = [Path(n).parent.name for n in names]
    measures = json.loads(MEASURES.read_text()) if MEASURES.is_file() else {}
    have_quality = all(n in measures for n in names)
    quality = np.array([measures.get(n, {}).get("detector_score", 1.0) for n in names], dtype=np.float32)
    counts: dict[str, int] = {}
    for p in who:
        counts[p] = counts.get(p, 0) + 1
    people = sorted(p for p, k in counts.items() if k >= 3)
    halves = (people[0::2], people[1::2])
    rules = ["max", "mean", "centroid", *(["qmean", "qmax"] if have_quality else [])]
    print(
        f"{len(people)} people with 3+ photos ({sum(counts[p] for p in people)} probes); "
        f"quality: {have_quality}"
    )
    results: dict[str, Any] = {}
    for t_max in args.templates:
        for rule in rules:
            if t_max == 1 and rule != "max":
                continue  # one template: every rule is the same score
            genuine, impostor = scores(vectors, who, quality, people, rule, t_max)
            cv = [evaluate(genuine, impostor, a, b) for a, b in (halves, halves[::-1])]
            whole = evaluate(genuine, impostor, people, people)
            key = f"T={t_max} {rule}"
            results[key] = {"cv": cv, "in_sample": whole}
            cells = []
            for f in ("0.001", "0.0001", "1e-05"):
                if f in cv[0] and f in cv[1]:
                    r = (cv[0][f]["recall"] + cv[1][f]["recall"]) / 2
                    u = (cv[0][f]["fmr_unseen"] + cv[1][f]["fmr_unseen"]) / 2
                    cells.append(f"FMR {f}: recall {100 * r:.2f}% (unseen FMR {u:.1e})")
                if f in whole:
                    cells.append(f"in-sample {100 * whole[f]['recall']:.2f}%")
            print(f"{key:<14} " + " | ".join(cells), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
