"""Score normalisation and quality-conditioned thresholds: do they hold on unseen people?

    python bench/score_norm.py --cache artifacts/lfw-templates.npz [--json FILE]

Templates: a `face-dedup calibrate --cache` file of the LFW development photos (default pack);
quality measures from bench/lfw_measures.py (.cache/bench/lfw-measures.json) for the
quality-conditioned thresholds (skipped without it).

People are split in halves (sorted names, alternating). On the calibration half, one photo of
each of --cohort people forms the cohort (those people's photos are then left out of the
pairs); every threshold is chosen on the calibration half's pairs, and recall and the realised
FMR are measured on the OTHER half's pairs (people never seen), then the halves swap.

Methods (all against raw cosine at the same FMR):
- tnorm: (s - mean) / std of the probe's scores against the cohort (one side, the probe);
- snorm: symmetric: the mean of both sides' T-normalised scores;
- asnorm: adaptive S-norm: as snorm, but the statistics of each side's top --top cohort scores;
- qthresh: one raw-score threshold per band of pair quality (the lower detector confidence of
  the two photos: terciles of the calibration half), each band held at the same FMR.
A method is adopted only if it raises recall at every FMR on both unseen halves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.calibration import threshold_at_far

F32 = NDArray[np.float32]
ROOT = Path(__file__).resolve().parents[1]
MEASURES = ROOT / ".cache" / "bench" / "lfw-measures.json"
FMRS = (1e-3, 1e-4, 1e-5)


def cohort_stats(scores: F32, top: int | None) -> tuple[F32, F32]:
    """Mean and std of each row's cohort scores (its `top` highest when given)."""
    if top is not None:
        scores = -np.sort(-scores, axis=1)[:, :top]
    return scores.mean(axis=1), scores.std(axis=1) + 1e-6


def pair_scores(
    vectors: F32, rows: NDArray[np.int64], labels: NDArray[np.int64], cohort: F32, method: str, top: int
) -> tuple[F32, F32, NDArray[np.int64], NDArray[np.int64]]:
    """Genuine and impostor scores over every pair of `rows`, normalised by `method`, with
    the pair's (i, j) photo indices for the impostor side (for quality bands)."""
    v = vectors[rows]
    gram = v @ v.T
    if method != "raw":
        c = v @ cohort.T
        mu, sd = cohort_stats(c, top if method == "asnorm" else None)
        if method == "tnorm":
            gram = (gram - mu[:, None]) / sd[:, None]  # row = probe side
        else:
            gram = 0.5 * ((gram - mu[:, None]) / sd[:, None] + (gram - mu[None, :]) / sd[None, :])
    i, j = np.triu_indices(len(rows), k=1)
    if method == "tnorm":  # not symmetric: use both orders of each pair
        i, j = np.concatenate([i, j]), np.concatenate([j, i])
    same = labels[rows][i] == labels[rows][j]
    s = gram[i, j].astype(np.float32)
    return s[same], s[~same], rows[i][same], rows[j][same]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--cohort", type=int, default=300)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with np.load(args.cache, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
    who = [Path(n).parent.name for n in names]
    labels = np.unique(np.array(who), return_inverse=True)[1]
    measures = json.loads(MEASURES.read_text()) if MEASURES.is_file() else {}
    quality = np.array([measures.get(n, {}).get("detector_score", np.nan) for n in names])
    people = sorted(set(who))
    halves = (set(people[0::2]), set(people[1::2]))
    methods = ["raw", "tnorm", "snorm", "asnorm"]
    results: dict[str, Any] = {}
    for h, (calib, test) in enumerate((halves, halves[::-1])):
        cohort_people = sorted(calib)[:: max(1, len(calib) // args.cohort)][: args.cohort]
        first = {p: i for i, p in reversed(list(enumerate(who)))}
        cohort = vectors[[first[p] for p in cohort_people]]
        keep = set(cohort_people)
        c_rows = np.array([i for i, p in enumerate(who) if p in calib and p not in keep])
        t_rows = np.array([i for i, p in enumerate(who) if p in test])
        raw_hits: dict[float, NDArray[np.bool_]] = {}
        for method in methods:
            _, ci, _, _ = pair_scores(vectors, c_rows, labels, cohort, method, args.top)
            tg, ti, _, _ = pair_scores(vectors, t_rows, labels, cohort, method, args.top)
            for f in FMRS:
                t = threshold_at_far(ci, f)
                hits = tg >= t
                raw_hits.setdefault(f, hits)  # "raw" runs first
                # tnorm scores each pair in both orders (either photo may be the probe)
                raw = np.concatenate([raw_hits[f]] * (len(hits) // len(raw_hits[f])))
                results.setdefault(method, {}).setdefault(f"{f:g}", []).append(
                    {
                        "recall": float(np.mean(hits)),
                        "fmr_unseen": float(np.mean(ti >= t)),
                        # paired with raw on the same genuine pairs (McNemar's discordant counts)
                        "found_only_here": int(np.sum(hits & ~raw)),
                        "found_only_by_raw": int(np.sum(~hits & raw)),
                    }
                )
        if np.isfinite(quality).all():
            results.setdefault("qthresh", {})
            for f in FMRS:
                results["qthresh"].setdefault(f"{f:g}", []).append(
                    quality_bands(vectors, labels, quality, c_rows, t_rows, f)
                )
        print(
            f"half {h}: calibration {len(c_rows)} photos (cohort {len(cohort)}), unseen {len(t_rows)}",
            flush=True,
        )
    for method, by_fmr in results.items():
        cells = []
        for f, halves_out in by_fmr.items():
            r = np.mean([x["recall"] for x in halves_out])
            u = np.mean([x["fmr_unseen"] for x in halves_out])
            per = "/".join(f"{100 * x['recall']:.2f}" for x in halves_out)
            gain = sum(x.get("found_only_here", 0) for x in halves_out)
            loss = sum(x.get("found_only_by_raw", 0) for x in halves_out)
            cells.append(f"FMR {f}: recall {100 * r:.2f}% ({per}) +{gain}/-{loss}, unseen FMR {u:.1e}")
        print(f"{method:<8} " + " | ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def quality_bands(
    vectors: F32, labels: NDArray[np.int64], quality: NDArray[np.float64], c_rows: Any, t_rows: Any, f: float
) -> dict[str, float]:
    def pairs(rows: Any) -> tuple[F32, NDArray[np.bool_], NDArray[np.float64]]:
        v = vectors[rows]
        i, j = np.triu_indices(len(rows), k=1)
        s = (v @ v.T)[i, j].astype(np.float32)
        same = labels[rows][i] == labels[rows][j]
        q = np.minimum(quality[rows][i], quality[rows][j])
        return s, same, q

    cs, csame, cq = pairs(c_rows)
    ts, tsame, tq = pairs(t_rows)
    edges = np.quantile(cq[~csame], [1 / 3, 2 / 3])
    cb, tb = np.digitize(cq, edges), np.digitize(tq, edges)
    thresholds = np.array([threshold_at_far(cs[~csame & (cb == b)], f) for b in range(3)])
    accepted = ts >= thresholds[tb]
    return {"recall": float(np.mean(accepted[tsame])), "fmr_unseen": float(np.mean(accepted[~tsame]))}


if __name__ == "__main__":
    main()
