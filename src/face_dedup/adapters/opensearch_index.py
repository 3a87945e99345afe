"""OpenSearch k-NN adapter of the vector index port (the cloud deployment's index).

Mapping: one `knn_vector` field of the model pack's dimension (HNSW on faiss with inner
product, or lucene with cosine), `tenant` and `model_pack` as keyword filter fields, the
record id as the document id. Searches always filter by tenant and model pack.

Scores are never taken from the engine: the engines' score conventions differ (faiss
inner product reports 1 + ip, cosinesimil reports (1 + cos) / 2) and `min_score` combined
with efficient filtering has had bugs (k-NN #3099, #3335). So the adapter fetches the stored
vectors of the engine's candidates and computes the cosine itself, then applies `min_score`.
Approximate search can miss a neighbour; `oversample` asks the engine for more candidates
than `k` to keep de-duplication recall high (see ../shared/notes/vector-search.md).

Two methods (capacity.py; the deployment chooses by registry size, BENCHMARKS.md "Cloud
index"): `hnsw` (a faiss graph, fp32 or with faiss's 16-bit `sq` encoder; the `knn` query) and
`exact` (no graph, `index.knn: false`; a `script_score` query with the k-NN plugin's
`knn_score` script scores every vector of the tenant's partition: recall 1 by construction,
cost linear in the partition). Changing the method of an existing index means a new index
(the mapping differs) and a reindex.

The client is an `opensearchpy.OpenSearch` (with SigV4 auth for the managed service), passed
in by the bootstrap; this module imports nothing from it, so the core does not need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from face_dedup.capacity import DEFAULT_METHOD
from face_dedup.errors import ConfigError, TransientError
from face_dedup.ports import Hit, IndexEntry, VectorIndex

MAX_K = 10_000  # OpenSearch's largest k-NN `k` and default `index.max_result_window`


class OpenSearchClient(Protocol):
    """The part of `opensearchpy.OpenSearch` this adapter uses."""

    @property
    def indices(self) -> Any: ...

    def bulk(self, body: Any, **kwargs: Any) -> Any: ...

    def search(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any: ...

    def count(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any: ...


SEARCH_METHODS = ("hnsw", "exact")
ENCODINGS = ("fp32", "fp16")


def index_body(
    dim: int,
    *,
    engine: str,
    m: int,
    ef_construction: int,
    ef_search: int,
    method: str = "hnsw",
    encoding: str = "fp32",
    shards: int = 1,
) -> dict[str, Any]:
    space = {"faiss": "innerproduct", "lucene": "cosinesimil"}.get(engine)
    if space is None:
        raise ValueError(f"unsupported k-NN engine {engine!r} (faiss or lucene)")
    _check_method(method, encoding, engine)
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    vector: dict[str, Any] = {"type": "knn_vector", "dimension": dim}
    settings: dict[str, Any] = {"number_of_shards": shards}
    if method == "exact":
        settings["knn"] = False  # no graph is built or loaded: the script reads the doc values
    else:
        settings |= {"knn": True, "knn.algo_param.ef_search": ef_search}
        parameters: dict[str, Any] = {"m": m, "ef_construction": ef_construction}
        if encoding == "fp16":  # faiss's 16-bit scalar quantiser: the vectors halve (not the links)
            parameters["encoder"] = {"name": "sq", "parameters": {"type": "fp16"}}
        vector["method"] = {"name": "hnsw", "engine": engine, "space_type": space, "parameters": parameters}
    return {
        "settings": {"index": settings},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "vector": vector,
                "tenant": {"type": "keyword"},
                "model_pack": {"type": "keyword"},
            },
        },
    }


def _check_method(method: str, encoding: str, engine: str) -> None:
    if method not in SEARCH_METHODS:
        raise ValueError(f"unsupported index method {method!r} ({' or '.join(SEARCH_METHODS)})")
    if encoding not in ENCODINGS:
        raise ValueError(
            f"unsupported index encoding {encoding!r} ({' or '.join(ENCODINGS)}; 8-bit is not offered: "
            "see face_dedup/capacity.py DEPLOYABLE)"
        )
    if encoding != "fp32" and (method == "exact" or engine != "faiss"):
        raise ValueError(f"encoding {encoding} needs the hnsw method on the faiss engine")


def exact_query(
    vector: list[float], tenant: str, model_pack: str, size: int, min_score: float | None
) -> dict[str, Any]:
    """The exact search body: the partition's filter inside a `script_score` whose script is
    the k-NN plugin's `knn_score` (inner product: score 1 + ip for ip >= 0). With a threshold,
    the top-level `min_score` drops documents below it on the shards (a hair below, so float
    rounding in the JVM cannot drop one the client's cosine keeps); the client re-scores."""
    body: dict[str, Any] = {
        "size": size,
        "_source": ["vector"],
        "query": {
            "script_score": {
                "query": _filter(tenant, model_pack),
                "script": {
                    "source": "knn_score",
                    "lang": "knn",
                    "params": {"field": "vector", "query_value": vector, "space_type": "innerproduct"},
                },
            }
        },
    }
    if min_score is not None and min_score >= 0:
        body["min_score"] = 1.0 + min_score - 1e-4
    return body


@contextmanager
def _transient_errors() -> Iterator[None]:
    """Connection failures, throttling and 5xx from the cluster become TransientError (the
    workflow retries those); anything else (a bad mapping, a rejected document) is a bug."""
    try:
        yield
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        if type(exc).__name__ in ("ConnectionError", "ConnectionTimeout", "SSLError") or status in (
            429,
            502,
            503,
            504,
        ):
            raise TransientError(f"OpenSearch unavailable: {type(exc).__name__}") from exc
        raise


def _filter(tenant: str, model_pack: str) -> dict[str, Any]:
    return {"bool": {"filter": [{"term": {"tenant": tenant}}, {"term": {"model_pack": model_pack}}]}}


class OpenSearchVectorIndex(VectorIndex):
    def __init__(
        self,
        client: OpenSearchClient,
        index: str,
        dim: int,
        *,
        engine: str = "faiss",
        # The method measured to hold duplicate recall (capacity.py, BENCHMARKS.md "Cloud index").
        m: int = DEFAULT_METHOD.m,
        ef_construction: int = DEFAULT_METHOD.ef_construction,
        ef_search: int = DEFAULT_METHOD.ef_search,
        oversample: int = DEFAULT_METHOD.oversample,
        refresh: str = "wait_for",
        method: str = DEFAULT_METHOD.name,
        encoding: str = DEFAULT_METHOD.encoding,
        shards: int = 1,
    ) -> None:
        """Connects to nothing: the index is created at deployment (`ensure_index`, run by the
        stack's index-setup step), so a function's cold start never reaches the cluster."""
        self._client = client
        self._index = index
        self._dim = dim
        self._engine = engine
        _check_method(method, encoding, engine)
        self._method = method
        self._params: dict[str, Any] = {
            "m": m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "method": method,
            "encoding": encoding,
            "shards": shards,
        }
        self._oversample = max(1, oversample)
        # "wait_for": an add returns once searches can see it, which race-free enrollment needs.
        self._refresh = refresh

    def ensure_index(self) -> bool:
        """Create the index with its mapping if absent (deployment, local setups); True if created.
        An existing index built without a graph (the exact method's) cannot answer the `knn`
        query an hnsw deployment sends (the plugin: "Field 'vector' is not built for ANN
        search."), so such a deployment is refused here, at its index step, rather than failing
        every enrollment after it. The other way works (knn_score scores a graph's field too)."""
        with _transient_errors():
            if self._client.indices.exists(index=self._index):
                if self._method == "hnsw":
                    self._refuse_graphless(self._client.indices.get_mapping(index=self._index))
                return False
            self._client.indices.create(
                index=self._index, body=index_body(self._dim, engine=self._engine, **self._params)
            )
        return True

    def _refuse_graphless(self, mappings: dict[str, Any]) -> None:
        for name, found in mappings.items():
            vector = found.get("mappings", {}).get("properties", {}).get("vector", {})
            if "method" not in vector:
                raise ConfigError(
                    f"index {name} was created for exact search (no k-NN graph); this deployment "
                    "asks hnsw of it, which OpenSearch refuses on every search. Deploy with "
                    "-c face-dedup:index-method=exact (the registry-size that chose exact), or "
                    "create a new index and reindex (README, 'Sizing the cloud index')"
                )

    def _check(self, vector: NDArray[np.float32], what: str) -> NDArray[np.float32]:
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if len(array) != self._dim:
            raise ValueError(f"{what} is {len(array)}-d, the index holds {self._dim}-d vectors")
        return array

    def add(self, entries: Sequence[IndexEntry]) -> None:
        lines: list[dict[str, Any]] = []
        for entry in entries:
            vector = self._check(entry.vector, f"vector for {entry.record_id}")
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
                raise ValueError(f"vector for {entry.record_id} is not L2-normalised (norm {norm})")
            lines.append({"index": {"_index": self._index, "_id": entry.record_id}})
            lines.append({"vector": vector.tolist(), "tenant": entry.tenant, "model_pack": entry.model_pack})
        if lines:
            with _transient_errors():
                response = self._client.bulk(body=lines, refresh=self._refresh)
            self._raise_on_errors(response)

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        tenant: str,
        model_pack: str,
        k: int,
        min_score: float | None = None,
    ) -> list[Hit]:
        if k <= 0:
            return []
        query = self._check(vector, "query")
        if k > MAX_K:
            raise ValueError(f"k={k} is above what OpenSearch's k-NN query returns ({MAX_K})")
        body: dict[str, Any]
        if self._method == "exact":  # every vector above min_score, best k: nothing to oversample
            body = exact_query(query.tolist(), tenant, model_pack, k, min_score)
        else:
            # The engine's candidate pool is capped too; a radial search (search_above) that fills
            # it comes back with more than k hits at or above min_score, so it reports `capped`.
            pool = min(k * self._oversample, MAX_K)
            body = {
                "size": pool,
                "_source": ["vector"],
                "query": {
                    "knn": {
                        "vector": {"vector": query.tolist(), "k": pool, "filter": _filter(tenant, model_pack)}
                    }
                },
            }
        with _transient_errors():
            response = self._client.search(index=self._index, body=body)
        hits = []
        for raw in response["hits"]["hits"]:
            stored = np.asarray(raw["_source"]["vector"], dtype=np.float32)
            score = float(stored @ query)  # verified here, whatever the engine reported
            if min_score is None or score >= min_score:
                hits.append(Hit(raw["_id"], score))
        hits.sort(key=lambda h: (-h.score, h.record_id))
        return hits[:k]

    def delete(self, record_ids: Iterable[str]) -> int:
        lines = [{"delete": {"_index": self._index, "_id": record_id}} for record_id in record_ids]
        if not lines:
            return 0
        with _transient_errors():
            response = self._client.bulk(body=lines, refresh=self._refresh)
        return sum(
            1 for item in response.get("items", []) if item.get("delete", {}).get("result") == "deleted"
        )

    def count(self, *, tenant: str, model_pack: str) -> int:
        with _transient_errors():
            response = self._client.count(index=self._index, body={"query": _filter(tenant, model_pack)})
        return int(response["count"])

    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]:
        ids: set[str] = set()
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": 5000,
                "_source": False,
                "query": _filter(tenant, model_pack),
                "sort": [{"_id": "asc"}],
            }
            if after is not None:
                body["search_after"] = after
            with _transient_errors():
                page = self._client.search(index=self._index, body=body)["hits"]["hits"]
            if not page:
                return ids
            ids.update(hit["_id"] for hit in page)
            after = page[-1]["sort"]

    @staticmethod
    def _raise_on_errors(response: dict[str, Any]) -> None:
        if response.get("errors"):
            failures = [
                next(iter(item.values())).get("error")
                for item in response.get("items", [])
                if next(iter(item.values())).get("error")
            ]
            raise RuntimeError(f"OpenSearch bulk request failed for {len(failures)} item(s): {failures[:3]}")


# What each function may do inside the index (the domain's security plugin): IAM lets a role
# reach the domain, but cannot tell a search POST from a bulk write; these roles can.
SECURITY_ROLES: dict[str, dict[str, Any]] = {
    "face_dedup_read": {
        "cluster_permissions": ["cluster_composite_ops_ro"],
        "index_permissions": [{"allowed_actions": ["read"]}],
    },
    "face_dedup_write": {
        "cluster_permissions": ["cluster_composite_ops"],
        "index_permissions": [{"allowed_actions": ["crud"]}],
    },
}


def provision(
    index: OpenSearchVectorIndex,
    role_arns: dict[str, list[str]],
    *,
    also: Sequence[OpenSearchVectorIndex] = (),
) -> dict[str, Any]:
    """The deployment's index step (run as the domain's master user): create the index with its
    mapping if absent, define the read and write roles on that one index, and map each
    function's IAM role to its role. Idempotent: every deployment runs it again. `also`: further
    indexes (a migration's shadow pack) created alike and covered by the same two roles; a
    deployment without them drops them from the roles (the indexes themselves are kept)."""
    created = index.ensure_index()
    for other in also:
        other.ensure_index()
    patterns = [index._index, *(other._index for other in also)]
    client: Any = index._client
    for name, role in SECURITY_ROLES.items():
        body = {
            "cluster_permissions": role["cluster_permissions"],
            "index_permissions": [
                {"index_patterns": patterns, **permission} for permission in role["index_permissions"]
            ],
        }
        with _transient_errors():
            client.transport.perform_request("PUT", f"/_plugins/_security/api/roles/{name}", body=body)
            client.transport.perform_request(
                "PUT",
                f"/_plugins/_security/api/rolesmapping/{name}",
                body={"backend_roles": sorted(role_arns.get(name, []))},
            )
    return {"created": created, "mapped": {name: len(arns) for name, arns in role_arns.items()}}
