"""Duplicate recall of the cloud index's methods, on synthetic registries fitted to real templates.

    python bench/index_recall.py --fit-only
    python bench/index_recall.py --sizes 100000 --queries 2000
    python bench/index_recall.py --sizes 1000000 --queries 1000 --methods hnsw-fp32 ivf-sq8

Templates of the shared LFW photos (default pack) are embedded once with the project's engine
and cached in .cache/bench/ (gitignored). A two-covariance model is fitted to them
(face_dedup.synthetic) and its fit is printed: genuine and impostor score distributions of a
synthetic set shaped like LFW beside the real ones.

A registry of N faces is N synthetic people with one enrolled photo each; each query is a new
photo of an enrolled person (an attempt to enroll twice). A true duplicate is a query whose
enrolled photo scores at or above the review threshold in force at N (calibration.py, the
default pack's tail, target FPIR 0.01) by exact cosine. Each method is built with faiss (the
library OpenSearch's faiss engine embeds) and searched the way the adapter searches: the
engine returns k x oversample candidates (HNSW with ef = max(ef_search, that)), the client
re-scores them with the stored fp32 vectors and keeps those at or above the threshold, best k.
Duplicate recall = true duplicates returned / true duplicates. Latency is one query at a time
on one thread; memory is faiss's serialized index size beside capacity.py's sizing formula.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from face_dedup import capacity
from face_dedup.calibration import ImpostorTail, all_pairs_scores, dedup_thresholds
from face_dedup.synthetic import FaceStatistics, score_summary

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
CACHE = ROOT / ".cache" / "bench" / "lfw-templates.npz"
PACK = "yunet-sface-flip-v1"
K = 10  # settings.max_candidates

# Methods differing only in how they are searched (ef_search, oversample, nprobes) share one
# built index (the cache in `main`), so a sweep costs one build.
METHODS = {
    "hnsw-fp32": capacity.IndexMethod("hnsw", "fp32"),  # the deployed default
    "hnsw-fp32-ef64": capacity.IndexMethod("hnsw", "fp32", ef_search=64),
    "hnsw-fp32-x1": capacity.IndexMethod("hnsw", "fp32", ef_search=100, oversample=1),
    "ivf-fp32": capacity.IndexMethod("ivf", "fp32"),
    "ivf-fp32-wide": capacity.IndexMethod("ivf", "fp32"),  # nprobes 10% of nlist (see WIDE)
    "ivf-sq8": capacity.IndexMethod("ivf", "sq8"),
    "ivf-sq8-wide": capacity.IndexMethod("ivf", "sq8"),
    "hnsw16-fp32-ef128": capacity.IndexMethod("hnsw", "fp32", m=16, ef_construction=128, ef_search=128),
    "hnsw-fp16": capacity.IndexMethod("hnsw", "fp16"),
    "hnsw-sq8": capacity.IndexMethod("hnsw", "sq8"),
}
WIDE = 0.10
_ALIVE: list[Any] = []
_SQ = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}


def load_templates() -> tuple[np.ndarray, list[str]]:
    if not CACHE.exists():
        from face_dedup.calibrate import _embed_all
        from face_dedup.settings import Settings

        files = sorted(str(p.relative_to(FACES)) for p in (FACES / "lfw").rglob("*.jpg"))
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        _embed_all(Settings.load(model_pack=PACK), FACES, files, CACHE)
    with np.load(CACHE, allow_pickle=False) as saved:
        if str(saved["model_pack"]) != PACK:
            sys.exit(f"{CACHE} holds templates of {saved['model_pack']}, not {PACK}")
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
    keep = [i for i, n in enumerate(names) if n.startswith("lfw/")]
    return vectors[keep], [names[i].split("/")[1] for i in keep]


def fit(report: dict[str, Any]) -> FaceStatistics:
    templates, people = load_templates()
    counts = np.unique(np.asarray(people), return_counts=True)[1]
    genuine, impostor = all_pairs_scores(templates, people)
    stats = FaceStatistics.fit(templates, people).tuned(genuine, counts)
    synthetic, labels = stats.like(np.random.default_rng(7), counts)
    s_genuine, s_impostor = all_pairs_scores(synthetic, [str(p) for p in labels])
    report["fit"] = {
        "real": score_summary(genuine, impostor),
        "synthetic": score_summary(s_genuine, s_impostor),
        "people": len(counts),
        "photos": len(templates),
        "within_scale": stats.within_scale,
        "spread": stats.spread,
    }
    return stats


def build(method: capacity.IndexMethod, dim: int, gallery: np.ndarray, rng: np.random.Generator) -> Any:
    if method.name == "hnsw":
        if method.encoding == "fp32":
            index = faiss.IndexHNSWFlat(dim, method.m, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(dim, _SQ[method.encoding], method.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = method.ef_construction
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if method.encoding == "fp32":
            index = faiss.IndexIVFFlat(quantizer, dim, method.nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, method.nlist, _SQ[method.encoding], faiss.METRIC_INNER_PRODUCT
            )
        index.nprobe = method.nprobes
        _ALIVE.append(quantizer)  # the index points at it; Python must not free it first
    if not index.is_trained:  # IVF lists, SQ ranges: trained on a sample (OpenSearch's Train API)
        sample = min(len(gallery), max(40 * max(method.nlist, 1), 50_000))
        index.train(gallery[rng.choice(len(gallery), sample, replace=False)])
    for start in range(0, len(gallery), 200_000):
        index.add(gallery[start : start + 200_000])
    return index


def measure(
    method: capacity.IndexMethod,
    gallery: np.ndarray,
    queries: np.ndarray,
    owners: np.ndarray,
    threshold: float,
    built: dict[tuple[Any, ...], tuple[Any, float]],
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    dim = gallery.shape[1]
    key = (method.name, method.encoding, method.m, method.ef_construction, method.nlist)
    if key not in built:
        built.clear()  # one index in memory at a time
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        built[key] = (build(method, dim, gallery, rng), time.perf_counter() - started)
    index, build_s = built[key]
    if method.name == "ivf":
        index.nprobe = method.nprobes
    pool = K * method.oversample
    if method.name == "hnsw":
        index.hnsw.efSearch = max(method.ef_search, pool)
    own = np.einsum("ij,ij->i", queries, gallery[owners])
    true = own >= threshold
    faiss.omp_set_num_threads(1)
    latencies, found, capped = [], 0, 0
    for q, (query, owner) in enumerate(zip(queries, owners, strict=True)):
        t0 = time.perf_counter()
        _, ids = index.search(query[None, :], pool)
        candidates = ids[0][ids[0] >= 0]
        exact = gallery[candidates] @ query  # the adapter re-scores with the stored vectors
        above = candidates[exact >= threshold]
        order = np.argsort(-exact[exact >= threshold], kind="stable")[:K]
        latencies.append(time.perf_counter() - t0)
        capped += int(len(candidates) == pool and bool(np.all(exact >= threshold)))
        if true[q] and owner in set(above[order].tolist()):
            found += 1
    memory = faiss.serialize_index(index).nbytes
    duplicates = int(true.sum())
    return {
        "method": method.label(),
        "duplicates": duplicates,
        "found": found,
        "recall": found / duplicates if duplicates else math.nan,
        "latency_ms_median": 1000 * statistics.median(latencies),
        "latency_ms_p95": 1000 * float(np.quantile(latencies, 0.95)),
        "build_s": build_s,
        "index_mb": memory / 1e6,
        "formula_mb": capacity.index_memory_bytes(method, len(gallery), dim, replicas=0) / 1e6,
        "capped_queries": capped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fit-only", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    report: dict[str, Any] = {"faiss": faiss.__version__, "pack": PACK, "runs": []}
    stats = fit(report)
    print(json.dumps(report["fit"], indent=1), flush=True)
    if args.fit_only:
        return
    tail = ImpostorTail.load(ROOT / "src" / "face_dedup" / "models" / f"calibration_{PACK}.json")
    for size in args.sizes:
        rng = np.random.default_rng(size)
        centres = stats.centres(rng, size)
        gallery = stats.photos(rng, centres)
        owners = rng.choice(size, args.queries, replace=False)
        queries = stats.photos(rng, centres[owners])
        del centres
        built: dict[tuple[Any, ...], tuple[Any, float]] = {}
        threshold = dedup_thresholds(tail, size, 0.01, 1e-4, floor=tail.threshold_for_fmr(1e-3)).review
        for name in args.methods:
            method = METHODS[name].for_size(size)
            if name.endswith("-wide"):
                method = replace(method, nprobes=math.ceil(WIDE * method.nlist))
            row = {"size": size, "name": name, "review_threshold": threshold, "queries": args.queries}
            row |= measure(method, gallery, queries, owners, threshold, built)
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
