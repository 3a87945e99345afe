"""Exact search on OpenSearch (issue 15): above 100k faces the deployed method is the k-NN
plugin's exact scan, a `script_score` query with its `knn_score` script. The body the adapter
sends, the mapping it creates (no graph), and that a radial search returns every face above
the threshold, or says it was cut. The scan runs on osmem-server with the k-NN plugin's
script answered by `FakeKnnOpenSearch` (tests/support)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from opensearchpy.exceptions import RequestError

from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex, exact_query, index_body
from face_dedup.bootstrap import _opensearch_index
from face_dedup.errors import ConfigError
from face_dedup.ports import IndexEntry
from face_dedup.settings import Settings
from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

DIM = 16


class RecordingKnnOpenSearch(FakeKnnOpenSearch):
    """The fake, keeping every search body the adapter sent (to check its exact form)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[Any] = []

    def search(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any:
        if "script_score" in (body or {}).get("query", {}) or "knn" in (body or {}).get("query", {}):
            self.bodies.append(body)
        return super().search(body=body, index=index, **kwargs)


def unit(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture
def exact(osmem_clone: Any) -> tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch]:
    client = RecordingKnnOpenSearch(hosts=[osmem_clone.url])
    index = OpenSearchVectorIndex(client, f"faces-{uuid.uuid4().hex[:12]}", DIM, method="exact", shards=3)
    assert index.ensure_index()
    return index, client


def test_the_exact_query_is_a_knn_score_script_over_the_partition(
    exact: tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch],
) -> None:
    index, client = exact
    query = unit(np.random.default_rng(1), 1)[0]
    index.search(query, tenant="t1", model_pack="p1", k=7, min_score=0.5)
    (body,) = client.bodies
    assert body == {
        "size": 7,
        "_source": ["vector"],
        "min_score": pytest.approx(1.5 - 1e-4),
        "query": {
            "script_score": {
                "query": {"bool": {"filter": [{"term": {"tenant": "t1"}}, {"term": {"model_pack": "p1"}}]}},
                "script": {
                    "source": "knn_score",
                    "lang": "knn",
                    "params": {
                        "field": "vector",
                        "query_value": query.tolist(),
                        "space_type": "innerproduct",
                    },
                },
            }
        },
    }
    index.search(query, tenant="t1", model_pack="p1", k=3)  # top-k: no min_score sent
    assert "min_score" not in client.bodies[-1] and client.bodies[-1]["size"] == 3


def test_exact_radial_search_returns_every_face_above_the_threshold(
    exact: tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch],
) -> None:
    index, _ = exact
    rng = np.random.default_rng(7)
    base = unit(rng, 1)[0]
    # A crowd of look-alikes at every distance from the query, among unrelated faces and
    # another tenant's copies of the look-alikes (never returned).
    crowd = base + rng.uniform(0.1, 1.5, (60, 1)).astype(np.float32) * unit(rng, 60)
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    others = unit(rng, 200)
    index.add([IndexEntry(f"c{i}", "t1", "p1", v) for i, v in enumerate(crowd)])
    index.add([IndexEntry(f"o{i}", "t1", "p1", v) for i, v in enumerate(others)])
    index.add([IndexEntry(f"x{i}", "t2", "p1", v) for i, v in enumerate(crowd)])
    scores = {f"c{i}": float(v @ base) for i, v in enumerate(crowd)} | {
        f"o{i}": float(v @ base) for i, v in enumerate(others)
    }
    threshold = 0.6
    expected = {rid for rid, score in scores.items() if score >= threshold}
    assert 10 < len(expected) < 60  # the threshold cuts through the crowd
    found = index.search_above(base, tenant="t1", model_pack="p1", min_score=threshold, limit=100)
    assert not found.capped
    assert {h.record_id for h in found.hits} == expected
    assert [h.score for h in found.hits] == sorted((scores[rid] for rid in expected), reverse=True)
    cut = index.search_above(base, tenant="t1", model_pack="p1", min_score=threshold, limit=5)
    assert cut.capped and len(cut.hits) == 5  # more above the threshold than listed: a case
    assert [h.record_id for h in cut.hits] == [h.record_id for h in found.hits[:5]]


def test_the_exact_mapping_builds_no_graph_and_fp16_carries_faiss_sq() -> None:
    body = index_body(128, engine="faiss", m=32, ef_construction=256, ef_search=256, method="exact", shards=4)
    assert body["settings"]["index"] == {"knn": False, "number_of_shards": 4}
    assert body["mappings"]["properties"]["vector"] == {"type": "knn_vector", "dimension": 128}
    fp16 = index_body(128, engine="faiss", m=32, ef_construction=256, ef_search=256, encoding="fp16")
    method = fp16["mappings"]["properties"]["vector"]["method"]
    assert method["parameters"]["encoder"] == {"name": "sq", "parameters": {"type": "fp16"}}
    assert fp16["settings"]["index"]["knn"] is True
    for bad in (
        {"encoding": "sq8"},
        {"method": "ivf"},
        {"method": "exact", "encoding": "fp16"},
        {"engine": "lucene", "encoding": "fp16"},
    ):
        args: dict[str, Any] = {"engine": "faiss", "m": 32, "ef_construction": 256, "ef_search": 256} | bad
        with pytest.raises(ValueError):
            index_body(128, **args)


def test_the_bootstrap_passes_the_method_and_refuses_an_unknown_one() -> None:
    common = {
        "index_backend": "opensearch",
        "opensearch_url": "http://127.0.0.1:9",
        "opensearch_auth": "none",
    }
    built = _opensearch_index(Settings.load({}, **common, opensearch_method="exact", opensearch_shards=4))
    assert built._params["method"] == "exact" and built._params["shards"] == 4
    with pytest.raises(ConfigError, match="unsupported index method 'annoy'"):
        _opensearch_index(Settings.load({}, **common, opensearch_method="annoy"))
    with pytest.raises(ConfigError, match="8-bit is not offered"):
        _opensearch_index(Settings.load({}, **common, opensearch_encoding="sq8"))


def test_an_hnsw_search_on_the_exact_index_fails_as_on_a_real_domain(
    exact: tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch],
) -> None:
    """The plugin answers a `knn` query only on a field built with a graph: on the exact
    method's index (no `method`, `index.knn: false`) a real domain says "Field 'vector' is not
    built for ANN search." (k-NN KNNQueryBuilder). The fake used to answer it with a scan, so a
    deployment whose functions ask HNSW of an index created exact (the method changed without a
    new index, README "Sizing the cloud index") looked fine in tests. The opposite direction
    works on a real domain (knn_score scores an HNSW field's vectors too) and here."""
    index, client = exact
    vector = unit(np.random.default_rng(3), 1)[0]
    index.add([IndexEntry("r1", "t1", "p1", vector)])
    as_hnsw = OpenSearchVectorIndex(client, index._index, DIM)  # the default method: hnsw
    with pytest.raises(RequestError, match="not built for ANN search"):
        as_hnsw.search(vector, tenant="t1", model_pack="p1", k=3)
    # So the deployment's index step refuses it (a registry-size that chose exact, lowered).
    with pytest.raises(ConfigError, match=r"created for exact search.*index-method=exact"):
        as_hnsw.ensure_index()
    graph = OpenSearchVectorIndex(client, f"faces-{uuid.uuid4().hex[:12]}", DIM)
    graph.ensure_index()
    assert not graph.ensure_index()  # an hnsw deployment again: its own index is fine
    assert not OpenSearchVectorIndex(client, graph._index, DIM, method="exact").ensure_index()
    graph.add([IndexEntry("r1", "t1", "p1", vector)])
    as_exact = OpenSearchVectorIndex(client, graph._index, DIM, method="exact")
    assert [h.record_id for h in as_exact.search(vector, tenant="t1", model_pack="p1", k=3)] == ["r1"]
    # Beyond the result window (10,000) the server refuses a search; the adapter never asks.
    with pytest.raises(RequestError, match="Result window is too large"):
        client.search(index=index._index, body=exact_query(vector.tolist(), "t1", "p1", 10_001, 0.5))
    with pytest.raises(ValueError, match="above what OpenSearch"):
        index.search(vector, tenant="t1", model_pack="p1", k=10_001)


def test_the_fakes_scores_are_the_plugins(osmem_clone: Any) -> None:
    """knn_score's formulas in k-NN's KNNScoringSpace: innerproduct is normalizeScore(-ip),
    1 + ip for ip >= 0 and 1 / (1 - ip) below; cosinesimil is 1 + cos (not the approximate
    query's (1 + cos) / 2)."""
    client = FakeKnnOpenSearch(hosts=[osmem_clone.url])
    index = OpenSearchVectorIndex(client, f"faces-{uuid.uuid4().hex[:12]}", DIM, method="exact")
    index.ensure_index()
    query = np.zeros(DIM, dtype=np.float32)
    query[0] = 1.0
    cosines = {"up": 0.6, "zero": 0.0, "down": -0.5}
    entries = []
    for rid, cos in cosines.items():
        v = np.zeros(DIM, dtype=np.float32)
        v[0], v[1] = cos, np.sqrt(1 - cos * cos)
        entries.append(IndexEntry(rid, "t1", "p1", v))
    index.add(entries)
    for space, expected in (
        ("innerproduct", {"up": 1.6, "zero": 1.0, "down": 1 / 1.5}),
        ("cosinesimil", {"up": 1.6, "zero": 1.0, "down": 0.5}),
    ):
        body = exact_query(query.tolist(), "t1", "p1", 10, None)
        body["query"]["script_score"]["script"]["params"]["space_type"] = space
        hits = client.search(index=index._index, body=body)["hits"]["hits"]
        assert {h["_id"]: h["_score"] for h in hits} == pytest.approx(expected, abs=1e-6), space


def test_faces_a_hair_either_side_of_the_threshold(
    exact: tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch],
) -> None:
    """The shards keep scores a hair (1e-4) below the threshold, so the JVM's float rounding
    cannot drop a face the client keeps; the client's own cosine then decides: a face 2e-5
    below the threshold reaches the client and is dropped there, one 2e-5 above is kept, and
    a radial search counting only those above is not capped by the ones just below."""
    index, client = exact
    threshold = 0.6
    query = np.zeros(DIM, dtype=np.float32)
    query[0] = 1.0
    offsets = {"above": 2e-5, "below": -2e-5, "far": 0.3, "under": -0.3}
    entries = []
    for rid, offset in offsets.items():
        cos = threshold + offset
        v = np.zeros(DIM, dtype=np.float32)
        v[0], v[1] = cos, np.sqrt(1 - cos * cos)
        entries.append(IndexEntry(rid, "t1", "p1", v))
    index.add(entries)
    # What the shards return with the body the adapter sends: the one just below too.
    raw = client.search(index=index._index, body=exact_query(query.tolist(), "t1", "p1", 10, threshold))
    assert {h["_id"] for h in raw["hits"]["hits"]} == {"far", "above", "below"}
    found = index.search_above(query, tenant="t1", model_pack="p1", min_score=threshold, limit=2)
    assert [h.record_id for h in found.hits] == ["far", "above"] and not found.capped
    one = index.search_above(query, tenant="t1", model_pack="p1", min_score=threshold, limit=1)
    assert [h.record_id for h in one.hits] == ["far"] and one.capped


def test_the_largest_max_candidates_fits_opensearchs_window(
    exact: tuple[OpenSearchVectorIndex, RecordingKnnOpenSearch],
) -> None:
    """The decision's radial search asks for max_candidates + 2 hits; above 9,998 every cloud
    search would fail (k above 10,000), so such a setting is refused when loaded."""
    index, client = exact
    vector = unit(np.random.default_rng(5), 1)[0]
    index.add([IndexEntry("r1", "t1", "p1", vector)])
    largest = Settings.load({}, max_candidates=9_998).max_candidates
    found = index.search_above(vector, tenant="t1", model_pack="p1", min_score=0.5, limit=largest + 1)
    assert [h.record_id for h in found.hits] == ["r1"] and client.bodies[-1]["size"] == 10_000
    with pytest.raises(ConfigError, match="at most 9,998"):
        Settings.load({}, max_candidates=9_999)
