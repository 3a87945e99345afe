"""Duplicate recall of the cloud index's methods, on synthetic registries fitted to real templates.

    python bench/index_recall.py --fit-only
    python bench/index_recall.py --sizes 100000 --queries 2000
    python bench/index_recall.py --sizes 1000000 --queries 1000 --methods hnsw-fp32 ivf-sq8
    python bench/index_recall.py --sizes 1000000 15000000 --queries 1000 --methods exact

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

`exact` is the OpenSearch `script_score` query with the k-NN plugin's `knn_score` script (the
adapter's `exact` search mode): every vector of the partition is scored, so recall is 1 by
construction, unless the result is capped (more than `limit` faces above the threshold: a case).
What it costs grows with N, and that is what is measured: the registry is generated and scanned
in chunks of 1M (faiss IndexFlatIP, one thread, one query at a time: the time to score one
query against every vector, summed over the chunks; CPU time beside wall time), so 15M faces
fit in ~2 GB. The chunked generator draws the same model (identity centre, then one photo per
person, queries a second photo of enrolled people) but not the same random sequence as the
in-memory registries of the other methods. The JVM's script scoring is slower per vector than
faiss's SIMD scan: the local figure is a floor for the domain's (capacity.EXACT_*).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
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
# IVF probing a larger share of its lists (name suffix -p<percent>): the recall/cost curve
# between the default 3% and an exact scan.
for _pct in (30, 50):
    METHODS[f"ivf-fp32-p{_pct}"] = capacity.IndexMethod("ivf", "fp32")
    METHODS[f"ivf-sq8-p{_pct}"] = capacity.IndexMethod("ivf", "sq8")
EXACT = "exact"
CHUNK = 1_000_000
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


def _chunks(stats: FaceStatistics, size: int) -> Iterator[tuple[int, np.random.Generator, np.ndarray]]:
    """The registry's identity centres, CHUNK at a time, each chunk from its own seed, so a
    second pass draws the same people again without holding them."""
    for number, start in enumerate(range(0, size, CHUNK)):
        rng = np.random.default_rng([size, number])
        yield start, rng, stats.centres(rng, min(CHUNK, size - start))


def measure_exact(stats: FaceStatistics, size: int, n_queries: int, threshold: float) -> dict[str, Any]:
    """The exact scan (script_score + knn_score), streamed. Pass 1 draws each query (a second
    photo of an enrolled person); pass 2 draws each chunk's enrolled photos, scores every query
    against the chunk and drops it. Each query keeps its best limit + 1 scores at or above the
    threshold, as the adapter asks OpenSearch for (size = limit + 1, min_score)."""
    owners = np.sort(np.random.default_rng(size).choice(size, n_queries, replace=False))
    queries = np.empty((n_queries, stats.dim), dtype=np.float32)
    query_rng = np.random.default_rng(size + 1)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start, _, centres in _chunks(stats, size):
        mine = np.flatnonzero((owners >= start) & (owners < start + len(centres)))
        queries[mine] = stats.photos(query_rng, centres[owners[mine] - start])
    own = np.zeros(n_queries, dtype=np.float32)
    kept: list[list[tuple[float, int]]] = [[] for _ in range(n_queries)]
    scan_wall, scan_cpu = np.zeros(n_queries), np.zeros(n_queries)
    batch_wall = batch_cpu = 0.0
    faiss.omp_set_num_threads(1)
    for start, rng, centres in _chunks(stats, size):
        chunk = stats.photos(rng, centres)
        del centres
        mine = np.flatnonzero((owners >= start) & (owners < start + len(chunk)))
        own[mine] = np.einsum("ij,ij->i", queries[mine], chunk[owners[mine] - start])
        index = faiss.IndexFlatIP(stats.dim)
        index.add(chunk)
        del chunk
        for q in range(n_queries):  # one query at a time, one thread: an enrollment's search
            wall, cpu = time.perf_counter(), time.thread_time()
            scores, ids = index.search(queries[q : q + 1], K + 1)
            scan_cpu[q] += time.thread_time() - cpu
            scan_wall[q] += time.perf_counter() - wall
            above = [
                (float(s), start + int(i)) for s, i in zip(scores[0], ids[0], strict=True) if s >= threshold
            ]
            kept[q] = sorted(kept[q] + above, reverse=True)[: K + 1]
        wall, cpu = time.perf_counter(), time.thread_time()
        index.search(queries, K + 1)  # all queries at once (GEMM): the bulk rate, for contrast
        batch_cpu += time.thread_time() - cpu
        batch_wall += time.perf_counter() - wall
        del index
    true = own >= threshold
    found = sum(1 for q in np.flatnonzero(true) if owners[q] in {i for _, i in kept[q][:K]})
    duplicates = int(true.sum())
    return {
        "method": "exact (script_score knn_score) fp32",
        "duplicates": duplicates,
        "found": found,
        "recall": found / duplicates if duplicates else math.nan,
        "latency_ms_median": 1000 * float(np.median(scan_wall)),
        "latency_ms_p95": 1000 * float(np.quantile(scan_wall, 0.95)),
        "cpu_ms_per_query_median": 1000 * float(np.median(scan_cpu)),
        "vectors_per_cpu_s": size / float(np.median(scan_cpu)),
        "batched_queries_per_s": n_queries / batch_wall,
        "batched_cpu_ms_per_query": 1000 * batch_cpu / n_queries,
        "index_mb": size * stats.dim * 4 / 1e6,  # fp32 doc values: what a scan reads
        "formula_mb": capacity.index_memory_bytes(capacity.EXACT_METHOD, size, stats.dim, replicas=0) / 1e6,
        "capped_queries": sum(1 for hits in kept if len(hits) > K),
        "total_wall_s": time.perf_counter() - wall0,
        "total_cpu_s": time.process_time() - cpu0,
        "load_average": os.getloadavg(),
        "chunk": CHUNK,
    }


def main() -> None:

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, EXACT])
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
        if EXACT in args.methods:
            threshold = dedup_thresholds(tail, size, 0.01, 1e-4, floor=tail.threshold_for_fmr(1e-3)).review
            row = {"size": size, "name": EXACT, "review_threshold": threshold, "queries": args.queries}
            row |= measure_exact(stats, size, args.queries, threshold)
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))
        approximate = [name for name in args.methods if name != EXACT]
        if not approximate:
            continue
        rng = np.random.default_rng(size)
        centres = stats.centres(rng, size)
        gallery = stats.photos(rng, centres)
        owners = rng.choice(size, args.queries, replace=False)
        queries = stats.photos(rng, centres[owners])
        del centres
        built: dict[tuple[Any, ...], tuple[Any, float]] = {}
        threshold = dedup_thresholds(tail, size, 0.01, 1e-4, floor=tail.threshold_for_fmr(1e-3)).review
        for name in approximate:
            method = METHODS[name].for_size(size)
            if name.endswith("-wide"):
                method = replace(method, nprobes=math.ceil(WIDE * method.nlist))
            elif "-p" in name:
                share = int(name.rsplit("-p", 1)[1]) / 100
                method = replace(method, nprobes=math.ceil(share * method.nlist))
            row = {"size": size, "name": name, "review_threshold": threshold, "queries": args.queries}
            row |= measure(method, gallery, queries, owners, threshold, built)
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
