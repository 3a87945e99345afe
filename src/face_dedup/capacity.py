"""Index methods, their measured limits, and what a registry of N faces needs on OpenSearch.

One module for three users, so they cannot drift apart:
- the CDK app sizes the domain (instance type, data nodes, volume) from `plan()` and refuses at
  synth a registry size its index method has not been measured to serve (`check_method`);
- `face-dedup plan-capacity` prints the same plan with its monthly cost;
- bench/index_recall.py builds the same methods with faiss (the library OpenSearch's faiss
  engine embeds) and measures their duplicate recall (BENCHMARKS.md, "Cloud index").

Memory formulas are OpenSearch's published k-NN sizing rules (native memory, per vector):
HNSW  1.1 x (bytes_per_value x d + 8 x m), IVF  1.1 x (bytes_per_value x d) + per-list
overhead 4 x nlist x d. The k-NN plugin may use `knn.memory.circuit_breaker.limit` (50%) of
what the JVM heap leaves, and the JVM heap is half the node's RAM (capped at 32 GB): so about
a quarter of a node's RAM holds graphs. Prices are AWS's published on-demand prices for
us-east-1 on the date in `PRICES_AS_OF`; check them before you budget.

`exact` is the k-NN plugin's exact search (a `script_score` query with its `knn_score` script
over the same `knn_vector` field, the index created with `index.knn: false`: no graph at all).
Recall is 1 by construction; its cost is a scan of every vector of the tenant per search, so it
is sized for latency and throughput instead of graph memory: the fp32 doc values it reads
should stay in the page cache (the same quarter of RAM as above), and the primary shards (each
scanned by one search thread) are enough for a search to finish within EXACT_LATENCY_S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

ENCODING_BYTES = {"fp32": 4.0, "fp16": 2.0, "sq8": 1.0}
METHODS = ("hnsw", "ivf", "exact")


class CapacityError(ValueError):
    """A deployment asks for something its index method cannot deliver (a clear message)."""


@dataclass(frozen=True)
class IndexMethod:
    """How the k-NN field is indexed (OpenSearch mapping `method`) and how the adapter asks.

    `oversample`: the adapter asks the engine for k x oversample candidates and re-scores them
    with the stored vectors. For HNSW the engine searches with ef = max(ef_search, k x
    oversample). `sq8` is 8-bit scalar quantisation (faiss SQ8; OpenSearch's lucene engine
    offers the same idea as int7 scalar quantisation, its faiss engine 16-bit `sq` fp16)."""

    name: str = "hnsw"
    encoding: str = "fp32"
    m: int = 32
    ef_construction: int = 256
    ef_search: int = 256
    nlist: int = 0  # IVF only: lists; 0 = 4 x sqrt(N) at the declared size
    nprobes: int = 0  # IVF only: lists searched; 0 = 3% of nlist
    oversample: int = 4

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise CapacityError(f"unknown index method {self.name!r} ({', '.join(METHODS)})")
        if self.encoding not in ENCODING_BYTES:
            raise CapacityError(f"unknown encoding {self.encoding!r} ({', '.join(ENCODING_BYTES)})")
        if min(self.m, self.ef_construction, self.ef_search, self.oversample) < 1:
            raise CapacityError("m, ef_construction, ef_search and oversample must be at least 1")
        if self.name == "exact" and self.encoding != "fp32":  # its label and cost assume fp32
            raise CapacityError(
                f"exact search reads the fp32 vectors; encoding {self.encoding!r} applies to hnsw only"
            )

    def for_size(self, faces: int) -> IndexMethod:
        """IVF's list counts filled in for a registry of `faces` (no change for HNSW)."""
        if self.name != "ivf":
            return self
        nlist = self.nlist or max(16, round(4 * math.sqrt(max(1, faces))))
        return replace(self, nlist=nlist, nprobes=self.nprobes or max(1, math.ceil(0.03 * nlist)))

    def label(self) -> str:
        if self.name == "exact":
            return "exact (script_score knn_score) fp32"
        if self.name == "hnsw":
            core = f"hnsw m={self.m} efc={self.ef_construction} efs={self.ef_search}"
        else:
            core = f"ivf nlist={self.nlist or 'auto'} nprobes={self.nprobes or 'auto'}"
        return f"{core} {self.encoding} x{self.oversample}"


# The approximate method the stack deploys up to the size measurements show it keeps duplicate
# recall >= 99.5% above the review threshold in force at that size (BENCHMARKS.md, "Cloud
# index": synthetic registries fitted to the default pack's LFW templates). Beyond that the
# default is the exact scan (`default_method`).
DEFAULT_METHOD = IndexMethod()
EXACT_METHOD = IndexMethod("exact", "fp32", oversample=1)
REQUIRED_RECALL = 0.995

# (method, encoding) -> the largest registry at which bench/index_recall.py measured
# REQUIRED_RECALL, for settings at least as strong as STRONGEST_MEASURED. Nothing else is
# validated: IVF (3% and 10% of lists probed) stayed at 84% and 96% at 100k; HNSW with
# ef_search 64, or without oversampling, at 96% and 98%. At 300k the default HNSW setting
# fell to 97.1%: nothing is validated beyond 100k. Larger sizes need their own run.
# fp16 and 8-bit held too (99.87%, 99.62%) but the stack deploys fp32 only: the adapter's
# mapping has no `encoder` yet (OpenSearch's faiss engine offers sq fp16; its lucene engine,
# not faiss, offers 7-bit scalar quantisation, which faiss's 8-bit SQ approximates).
# Exact search returns every vector above the threshold by construction (recall 1.0 in
# bench/index_recall.py at 1M and 15M, streamed); its entry is the largest size whose cost was
# measured, as nothing beyond it was.
VALIDATED: dict[tuple[str, str], int] = {
    ("hnsw", "fp32"): 100_000,
    ("hnsw", "fp16"): 100_000,
    ("hnsw", "sq8"): 100_000,
    ("exact", "fp32"): 15_000_000,
}
STRONGEST_MEASURED = {"m": 32, "ef_construction": 256, "ef_search": 256, "oversample": 4}
# What the adapter can create on OpenSearch 2.17's k-NN plugin (the stack's version):
# faiss HNSW fp32, faiss HNSW with its 16-bit `sq` encoder, and the exact scan (fp32 doc values;
# an encoder quantises only the engine's graph, which exact search does not use). 8-bit: the
# faiss engine's `sq` encoder is 16-bit only there, and lucene's int7 scalar quantisation (the
# lucene engine is Java) was not reproduced here, so it is not offered. IVF needs a model
# trained with the Train API before the index exists, which the deployment does not do.
DEPLOYABLE = frozenset({("hnsw", "fp32"), ("hnsw", "fp16"), ("exact", "fp32")})
# The order `default_method` prefers among validated methods of equal domain cost: the graph
# (a search reads ~ef x m vectors) before the scan (reads every vector).
PREFERENCE = (DEFAULT_METHOD, IndexMethod("hnsw", "fp16"), EXACT_METHOD)

# Exact search's cost: vectors scored per CPU-second by one search thread, measured with faiss's
# SIMD flat scan (bench/index_recall.py --methods exact, median single query, 128-d fp32: 42.7M
# at 1M, 34.1M at 15M under heavier load; the lower is kept; BENCHMARKS.md "Cloud index").
# The k-NN plugin's `knn_score` runs in the JVM over doc values and is slower per vector;
# EXACT_SCRIPT_FACTOR is an ASSUMED slowdown (not measured here: no OpenSearch runs on this
# machine) that the planner applies so a domain is not sized on a floor. Time searches on the
# deployed domain before relying on it.
EXACT_VECTORS_PER_CPU_S = 34_000_000.0
EXACT_SCRIPT_FACTOR = 10.0
EXACT_LATENCY_S = 1.0  # an enrollment's duplicate search (the workflow tolerates ~1 s)
# The functions' OpenSearch client gives up on a request after this long (bootstrap's client;
# the workflow retries it as transient). Concurrent exact searches share the domain's vCPUs, so
# the workflow's search concurrency is bounded (`index_concurrency_per_node`) for all of them to
# finish within CONCURRENT_SEARCH_SHARE of it: the planned CPU cost rests on an assumed script
# factor, and a search also waits for the network, the queue and garbage collection.
INDEX_CLIENT_TIMEOUT_S = 10
CONCURRENT_SEARCH_SHARE = 0.5
DEFAULT_INDEX_CONCURRENCY_PER_NODE = 8  # where nothing bounds it lower (graph search, small scans)
# infra/cdk.json pins the node type and count: `-c` cannot unset them, so the refusal says where.
UNPIN = " (infra/cdk.json sets both: override them with -c or remove them there)"


def _validated_list() -> str:
    """The methods a deployment may choose: validated and deployable."""
    return ", ".join(
        f"{name} {encoding} (to {faces:,})"
        for (name, encoding), faces in VALIDATED.items()
        if (name, encoding) in DEPLOYABLE
    )


def check_method(method: IndexMethod, faces: int) -> None:
    """Refuse a deployment whose method has not been shown to keep REQUIRED_RECALL at `faces`."""
    limit = VALIDATED.get((method.name, method.encoding), 0)
    approximate = method.name != "exact"  # graph and list parameters mean nothing to a scan
    if approximate and any(getattr(method, name) < floor for name, floor in STRONGEST_MEASURED.items()):
        limit = 0
    if faces > limit:
        measured = f"measured up to {limit:,}" if limit else "not measured to hold at any size"
        raise CapacityError(
            f"index method {method.label()} is not shown to keep duplicate recall >= "
            f"{REQUIRED_RECALL:.1%} at {faces:,} faces ({measured}; see BENCHMARKS.md, "
            "'Cloud index'). Measure it with bench/index_recall.py at this size, or choose a "
            f"validated method: {_validated_list()}."
        )


def check_deployable(method: IndexMethod) -> None:
    """Refuse what the adapter cannot create on the stack's OpenSearch (see DEPLOYABLE)."""
    if (method.name, method.encoding) not in DEPLOYABLE:
        offered = ", ".join(f"{name} {encoding}" for name, encoding in sorted(DEPLOYABLE))
        raise CapacityError(
            f"index method {method.name} {method.encoding} cannot be deployed on the stack's "
            f"OpenSearch k-NN plugin (deployable: {offered}; see face_dedup/capacity.py DEPLOYABLE)"
        )


def default_method(faces: int, *, dim: int = 128, replicas: int = 1, zones: int = 2) -> IndexMethod:
    """What the stack deploys for a registry of `faces` when the deployment names no method:
    the deployable method validated at that size whose domain costs least (ties: PREFERENCE)."""
    fits = []
    for rank, method in enumerate(PREFERENCE):
        try:
            check_method(method, faces)
        except CapacityError:
            continue
        cost = plan(faces, dim=dim, method=method, replicas=replicas, zones=zones).domain_monthly
        fits.append((cost, rank, method))
    if not fits:
        raise CapacityError(
            f"no deployable index method is validated at {faces:,} faces ({_validated_list()}); "
            "measure one with bench/index_recall.py at this size"
        )
    return min(fits, key=lambda fit: fit[:2])[2]


def exact_shards(faces: int) -> int:
    """Primary shards for an exact search to finish within EXACT_LATENCY_S: each shard is
    scanned by one search thread, the shards in parallel (on up to one vCPU each)."""
    seconds = faces * EXACT_SCRIPT_FACTOR / EXACT_VECTORS_PER_CPU_S
    return max(1, math.ceil(seconds / EXACT_LATENCY_S))


def exact_search_cpu_s(faces: int) -> float:
    """CPU-seconds one exact search costs the domain (planned, with EXACT_SCRIPT_FACTOR)."""
    return faces * EXACT_SCRIPT_FACTOR / EXACT_VECTORS_PER_CPU_S


def max_exact_concurrency_per_node(faces: int, vcpus_per_node: int) -> int:
    """The most exact searches per data node that may run at once: every search scans a copy of
    the index (exact_search_cpu_s), so N searches on each node share its vCPUs and each takes
    about N x cpu_s / vcpus; that must stay within CONCURRENT_SEARCH_SHARE of the client's
    timeout."""
    budget = CONCURRENT_SEARCH_SHARE * INDEX_CLIENT_TIMEOUT_S
    return math.floor(budget * vcpus_per_node / exact_search_cpu_s(faces))


def index_concurrency_per_node(
    method: IndexMethod, faces: int, *, instance_type: str, requested: int | None = None
) -> int:
    """The workflow's index concurrency per data node (search and complete each get this x data
    nodes): `requested`, or DEFAULT_INDEX_CONCURRENCY_PER_NODE, bounded for exact search by
    max_exact_concurrency_per_node. None requested: the default, lowered to that bound; a
    requested value above it is refused (a clear message), as is one no node can meet."""
    if requested is not None and requested < 1:
        raise CapacityError(f"face-dedup:index-concurrency-per-node must be at least 1, not {requested}")
    wanted = DEFAULT_INDEX_CONCURRENCY_PER_NODE if requested is None else requested
    if method.name != "exact":
        return wanted
    known = {t.name: t for t in INSTANCE_TYPES}
    if instance_type not in known:
        raise CapacityError(
            f"opensearch-instance-type {instance_type!r} is not known to the capacity planner"
        )
    vcpus = known[instance_type].vcpus
    bound = max_exact_concurrency_per_node(faces, vcpus)
    each = exact_search_cpu_s(faces)
    why = (
        f"an exact search over {faces:,} faces costs {each:.2f} CPU-s (planned), so N searches per "
        f"{instance_type} ({vcpus} vCPUs) take about N x {each:.2f} / {vcpus} s each, which must stay "
        f"within {CONCURRENT_SEARCH_SHARE * INDEX_CLIENT_TIMEOUT_S:g} s ({CONCURRENT_SEARCH_SHARE:g} of "
        f"the index client's {INDEX_CLIENT_TIMEOUT_S} s timeout)"
    )
    if bound < 1:
        raise CapacityError(
            f"{why}: not even one fits; use larger data nodes (face-dedup plan-capacity {faces})"
        )
    if requested is not None and requested > bound:
        raise CapacityError(
            f"face-dedup:index-concurrency-per-node={requested} is too many: {why}, so at most {bound}. "
            "Lower it, leave it unset (derived), or use data nodes with more vCPUs."
        )
    return min(wanted, bound)


# --------------------------------------------------------------------------------------------
# Memory and nodes


def vector_bytes(method: IndexMethod, dim: int) -> float:
    """Native (off-heap) memory per vector, OpenSearch's k-NN sizing rule."""
    values = ENCODING_BYTES[method.encoding] * dim
    if method.name == "exact":
        return 4.0 * dim  # the fp32 doc values the script reads, kept in the page cache
    if method.name == "hnsw":
        return 1.1 * (values + 8 * method.m)
    return 1.1 * values


def index_memory_bytes(method: IndexMethod, faces: int, dim: int, replicas: int = 1) -> float:
    """Graph/list memory across the cluster, every copy (primary + replicas) counted."""
    sized = method.for_size(faces)
    per_copy = faces * vector_bytes(sized, dim)
    if sized.name == "ivf":
        per_copy += 4 * sized.nlist * dim
    return per_copy * (1 + replicas)


@dataclass(frozen=True)
class InstanceType:
    name: str
    ram_gib: int
    usd_per_hour: float
    vcpus: int

    @property
    def knn_bytes(self) -> float:
        """What the k-NN circuit breaker lets graphs use: 50% of the RAM the heap leaves."""
        heap = min(self.ram_gib / 2, 32)
        return (self.ram_gib - heap) * 0.5 * 2**30


PRICES_AS_OF = (
    "2025 on-demand list prices, us-east-1, as recorded in face_dedup/capacity.py "
    "(OpenSearch Service, EBS gp3, Lambda arm64, Step Functions, DynamoDB, S3, Rekognition); "
    "not fetched at run time: check AWS's price pages before budgeting"
)
# Memory-optimised Graviton data nodes (the k-NN graphs live in RAM).
INSTANCE_TYPES = (
    InstanceType("r7g.large.search", 16, 0.167, 2),
    InstanceType("r7g.xlarge.search", 32, 0.335, 4),
    InstanceType("r7g.2xlarge.search", 64, 0.669, 8),
    InstanceType("r7g.4xlarge.search", 128, 1.339, 16),
    InstanceType("r7g.8xlarge.search", 256, 2.678, 32),
    InstanceType("r7g.12xlarge.search", 384, 4.016, 48),
)
GP3_USD_PER_GB_MONTH = 0.122
MIN_VOLUME_GB = 100  # the stack's smallest data-node volume (room for snapshots and merges)
HOURS_PER_MONTH = 730
# Per enrollment (one photo): what the serverless pipeline calls, from the stack's design.
LAMBDA_USD_PER_GB_S = 0.0000133334  # arm64
LAMBDA_USD_PER_REQUEST = 0.0000002
ENROLL_LAMBDA_GB_S = 2.0 * 1.5 + 0.5 * 0.3 * 3  # ingest (2 GB, ~1.5 s) + search/complete/notify
STEP_FUNCTIONS_USD_PER_TRANSITION = 0.000025
ENROLL_TRANSITIONS = 8
DYNAMODB_USD_PER_WRITE = 1.25e-6  # on-demand write request unit
DYNAMODB_USD_PER_READ = 0.25e-6
ENROLL_WRITES, ENROLL_READS = 6, 6
S3_USD_PER_PUT = 0.000005
ENROLL_PUTS = 3  # upload, photo, crop
S3_USD_PER_GB_MONTH = 0.023
PHOTO_MB = 0.3
# Rekognition face search (SearchFacesByImage + IndexFaces per enrollment), tiered per month.
# (cumulative monthly ceiling, USD per image): 1M, next 4M, next 30M, beyond.
REKOGNITION_TIERS: tuple[tuple[float, float], ...] = (
    (1e6, 0.001),
    (5e6, 0.0008),
    (35e6, 0.0006),
    (math.inf, 0.0004),
)
REKOGNITION_CALLS_PER_ENROLLMENT = 2  # IndexFaces + SearchFacesByImage
REKOGNITION_USD_PER_FACE_MONTH = 0.00001  # face metadata storage


def _rekognition_month(calls: int) -> float:
    cost, floor = 0.0, 0.0
    for ceiling, price in REKOGNITION_TIERS:
        if calls <= floor:
            break
        cost += (min(calls, ceiling) - floor) * price
        floor = ceiling
    return cost


@dataclass(frozen=True)
class Plan:
    faces: int
    dim: int
    method: IndexMethod
    replicas: int
    index_bytes: float
    instance: InstanceType
    data_nodes: int
    volume_gb: int
    enrollments_per_month: int
    monthly: dict[str, float] = field(default_factory=dict)
    rekognition_monthly: float = 0.0
    shards: int = 1  # primary shards of the index

    @property
    def search_seconds(self) -> float:
        """Planned wall time of one exact search: its shards scanned in parallel."""
        return exact_search_cpu_s(self.faces) / self.shards

    @property
    def searches_per_s(self) -> float:
        """Exact searches a second every vCPU of the domain sustains (each scans one copy)."""
        return self.data_nodes * self.instance.vcpus / exact_search_cpu_s(self.faces)

    @property
    def concurrency_per_node(self) -> int:
        """The workflow's index concurrency per data node the stack derives (exact: bounded)."""
        return index_concurrency_per_node(self.method, self.faces, instance_type=self.instance.name)

    @property
    def concurrent_search_seconds(self) -> float:
        """Planned wall time of each exact search when concurrency_per_node run on every node."""
        return self.concurrency_per_node * exact_search_cpu_s(self.faces) / self.instance.vcpus

    @property
    def domain_monthly(self) -> float:
        return self.monthly["data nodes"] + self.monthly["storage"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "dim": self.dim,
            "method": self.method.label(),
            # As the text says it: a script reading the JSON must see an unvalidated method too.
            "validated_and_deployable": validated(self.method, self.faces),
            "recall_verdict": recall_verdict(self.method, self.faces),
            "replicas": self.replicas,
            "index_gib": round(self.index_bytes / 2**30, 2),
            "instance_type": self.instance.name,
            "data_nodes": self.data_nodes,
            "volume_gb": self.volume_gb,
            "shards": self.shards,
            **(
                {
                    "exact_search_s_planned": round(self.search_seconds, 3),
                    "exact_searches_per_s_sustained": round(self.searches_per_s, 1),
                    "index_concurrency_per_node": self.concurrency_per_node,
                }
                if self.method.name == "exact"
                else {}
            ),
            "enrollments_per_month": self.enrollments_per_month,
            "monthly_usd": {k: round(v, 2) for k, v in self.monthly.items()},
            "total_monthly_usd": round(sum(self.monthly.values()), 2),
            "rekognition_monthly_usd": round(self.rekognition_monthly, 2),
            "prices_as_of": PRICES_AS_OF,
        }


def plan(
    faces: int,
    *,
    dim: int = 128,
    method: IndexMethod | None = None,
    replicas: int = 1,
    enrollments_per_month: int = 100_000,
    zones: int = 2,
    instance_type: str | None = None,
) -> Plan:
    """The smallest memory-optimised data nodes (at least one per zone, a multiple of the
    zones so shards spread evenly) whose k-NN memory holds every copy of the index with 20%
    headroom for growth and merges; for exact search also one vCPU per primary shard, so a
    search's shards are scanned in parallel. `instance_type` pins the node type instead.
    No `method`: the default for this size (`default_method`)."""
    if faces < 1 or dim < 1:
        raise CapacityError("faces and dim must be positive")
    if method is None:
        try:
            method = default_method(faces, dim=dim, replicas=replicas, zones=zones)
        except CapacityError:  # beyond every measurement: plan what was measured furthest (render says so)
            method = max(PREFERENCE, key=lambda m: VALIDATED.get((m.name, m.encoding), 0))
    if replicas < 0 or zones not in (1, 2, 3):
        raise CapacityError("replicas must be >= 0 and zones 1, 2 or 3 (what OpenSearch Service offers)")
    # Zone awareness puts a shard's copies in different zones, so one replica survives the loss
    # of any one zone, with 2 zones or 3 (the README's production profile: 3 zones, 1 replica).
    if zones > 1 and replicas < 1:
        raise CapacityError(f"{zones} zones need at least 1 replica to survive a zone loss")
    if enrollments_per_month < 0:
        raise CapacityError("enrollments a month must be >= 0")
    need = index_memory_bytes(method, faces, dim, replicas) * 1.2
    choices: tuple[InstanceType, ...] = INSTANCE_TYPES
    if instance_type is not None:
        choices = tuple(t for t in INSTANCE_TYPES if t.name == instance_type)
        if not choices:
            raise CapacityError(
                f"unknown instance type {instance_type!r}: {[t.name for t in INSTANCE_TYPES]}"
            )
    shards = exact_shards(faces) if method.name == "exact" else 1
    best: tuple[float, InstanceType, int] | None = None
    for instance in choices:
        nodes = max(zones, math.ceil(need / instance.knn_bytes), math.ceil(shards / instance.vcpus))
        nodes = math.ceil(nodes / zones) * zones
        cost = nodes * instance.usd_per_hour
        if best is None or cost < best[0]:
            best = (cost, instance, nodes)
    assert best is not None
    _, instance, nodes = best
    # Disk: the stored vectors (_source, fp32 JSON-ish ~2x), the engine's files, per copy, x2 for merges.
    per_node_gb = (faces * dim * 4 * 3 * (1 + replicas) * 2) / nodes / 1e9
    volume_gb = max(MIN_VOLUME_GB, math.ceil(per_node_gb / 10) * 10)
    monthly = {
        "data nodes": nodes * instance.usd_per_hour * HOURS_PER_MONTH,
        "storage": nodes * volume_gb * GP3_USD_PER_GB_MONTH,
        "per-enrollment services": enrollments_per_month
        * (
            ENROLL_LAMBDA_GB_S * LAMBDA_USD_PER_GB_S
            + 4 * LAMBDA_USD_PER_REQUEST
            + ENROLL_TRANSITIONS * STEP_FUNCTIONS_USD_PER_TRANSITION
            + ENROLL_WRITES * DYNAMODB_USD_PER_WRITE
            + ENROLL_READS * DYNAMODB_USD_PER_READ
            + ENROLL_PUTS * S3_USD_PER_PUT
        ),
        "photo storage": faces * PHOTO_MB / 1000 * S3_USD_PER_GB_MONTH,
    }
    rekognition = (
        _rekognition_month(enrollments_per_month * REKOGNITION_CALLS_PER_ENROLLMENT)
        + faces * REKOGNITION_USD_PER_FACE_MONTH
    )
    return Plan(
        faces,
        dim,
        method.for_size(faces),
        replicas,
        index_memory_bytes(method, faces, dim, replicas),
        instance,
        nodes,
        volume_gb,
        enrollments_per_month,
        monthly,
        rekognition,
        shards,
    )


def validated(method: IndexMethod, faces: int) -> bool:
    """Shown to keep REQUIRED_RECALL at `faces` and deployable on the stack."""
    try:
        check_method(method, faces)
        check_deployable(method)
    except CapacityError:
        return False
    return True


def recall_verdict(method: IndexMethod, faces: int) -> str:
    try:
        check_method(method, faces)
    except CapacityError as exc:
        return f"NOT VALIDATED: {exc}"
    try:
        check_deployable(method)
    except CapacityError as exc:
        return f"validated: duplicate recall >= {REQUIRED_RECALL:.1%} measured, but NOT DEPLOYABLE: {exc}"
    return f"validated: duplicate recall >= {REQUIRED_RECALL:.1%} measured at this size or above"


def render(p: Plan) -> list[str]:
    """The plan as text lines (the CLI prints them; the README shows them)."""
    money = p.as_dict()["monthly_usd"]
    copies = 1 + p.replicas
    return [
        f"registry: {p.faces:,} faces of {p.dim}-d, {p.enrollments_per_month:,} enrollments a month",
        f"index method: {p.method.label()}  ({recall_verdict(p.method, p.faces)})",
        f"index memory: {p.index_bytes / 2**30:,.1f} GiB for {copies} cop{'y' if copies == 1 else 'ies'} "
        f"({vector_bytes(p.method, p.dim):,.0f} B/vector)",
        f"data nodes: {p.data_nodes} x {p.instance.name} ({p.instance.ram_gib} GiB RAM, "
        f"{p.instance.knn_bytes / 2**30:,.0f} GiB k-NN memory each), {p.volume_gb} GB gp3 each",
        *(
            [
                f"exact search: {p.shards} primary shard(s); {p.search_seconds:.2f} s a search planned "
                f"({exact_search_cpu_s(p.faces) / EXACT_SCRIPT_FACTOR:.3f} CPU-s at faiss's measured "
                f"scan rate x {EXACT_SCRIPT_FACTOR:g} assumed for the JVM script), "
                f"{p.searches_per_s:,.0f} searches/s sustained by {p.data_nodes * p.instance.vcpus} vCPUs",
                f"search concurrency: {p.concurrency_per_node} per data node "
                f"({p.concurrency_per_node * p.data_nodes} at once, about {p.concurrent_search_seconds:.1f}"
                f" s each, within {CONCURRENT_SEARCH_SHARE * INDEX_CLIENT_TIMEOUT_S:g} s: "
                f"{CONCURRENT_SEARCH_SHARE:g} of the index client's {INDEX_CLIENT_TIMEOUT_S} s timeout)",
            ]
            if p.method.name == "exact"
            else []
        ),
        "monthly cost (USD):",
        *(f"  {name:<26}{value:>12,.2f}" for name, value in money.items()),
        f"  {'total':<26}{sum(money.values()):>12,.2f}",
        f"  {'Rekognition, same volume':<26}{p.rekognition_monthly:>12,.2f}  "
        f"(IndexFaces + SearchFacesByImage per enrollment, face storage)",
        f"prices: {PRICES_AS_OF}",
    ]


def check_deployment(
    faces: int,
    *,
    instance_type: str,
    data_nodes: int,
    method: IndexMethod | None = None,
    dim: int = 128,
    replicas: int = 1,
) -> None:
    """What the CDK app runs at synth: the method must be deployable and validated at the
    declared size, the data nodes' k-NN memory must hold every copy of the index with `plan`'s
    headroom, and for exact search the nodes need a vCPU per primary shard. No `method`: the
    default for this size."""
    if method is None:
        method = default_method(faces, dim=dim, replicas=replicas)
    check_deployable(method)
    check_method(method, faces)
    known = {t.name: t for t in INSTANCE_TYPES}
    instance = known.get(instance_type)
    if instance is None:
        raise CapacityError(
            f"opensearch-instance-type {instance_type!r}: its k-NN memory is not known to the "
            f"capacity planner (known: {', '.join(known)}); add it to face_dedup/capacity.py"
        )
    need = index_memory_bytes(method, faces, dim, replicas) * 1.2
    have = data_nodes * instance.knn_bytes
    if need > have:
        planned = plan(faces, dim=dim, method=method, replicas=replicas)
        raise CapacityError(
            f"{data_nodes} x {instance_type} hold {have / 2**30:.1f} GiB of k-NN graphs; "
            f"{faces:,} faces with {method.label()} and {replicas} replica(s) need "
            f"{need / 2**30:.1f} GiB (with 20% headroom). Use {planned.data_nodes} x "
            f"{planned.instance.name} (face-dedup plan-capacity {faces}) or leave both unset{UNPIN}."
        )
    if method.name == "exact" and data_nodes * instance.vcpus < exact_shards(faces):
        planned = plan(faces, dim=dim, method=method, replicas=replicas)
        raise CapacityError(
            f"{data_nodes} x {instance_type} have {data_nodes * instance.vcpus} vCPUs; an exact search "
            f"over {faces:,} faces needs {exact_shards(faces)} primary shards scanned in parallel to "
            f"finish within {EXACT_LATENCY_S:g} s. Use {planned.data_nodes} x {planned.instance.name} "
            f"(face-dedup plan-capacity {faces} --method exact) or leave both unset{UNPIN}."
        )
