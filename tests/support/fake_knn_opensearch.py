"""A named fake for the one thing no offline OpenSearch stand-in does: the k-NN plugin.

`FakeKnnOpenSearch` is a real `opensearchpy.OpenSearch` client talking to a real
OpenSearch-compatible server (osmem-server: index creation with `knn_vector` mappings and
their dimension checks, bulk, filters, deletes, counts, search_after all run there). Only the
k-NN plugin's two searches are answered here, in OpenSearch's response shape:
- the `knn` query (approximate search), by an exact scan of the documents that match the
  query's filter, with faiss' inner-product score convention (1 + ip for ip >= 0, else
  1 / (1 - ip)); refused as the plugin refuses it on a field built without a graph (an index
  created for exact search: "Field 'vector' is not built for ANN search.") and for k above
  10,000;
- `script_score` with the plugin's `knn_score` script (exact search), by the same scan of the
  documents its inner query matches, scored as the plugin documents for the space type
  (innerproduct: 1 + ip for ip >= 0, 1 / (1 - ip) below; cosinesimil: 1 + cos), keeping the
  top-level `min_score` and `size`. Any other script is refused, not guessed at.
Both refuse a `size` above the index's result window (10,000), as the server does for every
other search.

What this cannot check, and the real-cluster run (OPENSEARCH_URL) does: HNSW's
approximation (recall below 1 as the index grows), the engine's own filtered search and score
conventions, `ef_search`, the JVM script's speed, and the known engine bugs around min_score
with filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from opensearchpy import OpenSearch
from opensearchpy.exceptions import RequestError

MAX_RESULT_WINDOW = 10_000  # index.max_result_window's default; also the k-NN plugin's largest k


def _inner_product_score(ip: float) -> float:
    """KNNWeight.normalizeScore(-ip), the plugin's score for innerproduct (knn_score and faiss)."""
    return 1.0 + ip if ip >= 0 else 1.0 / (1.0 - ip)


def _refused(reason: str) -> RequestError:
    """The 400 a real cluster answers, in the body shape opensearch-py reads its reason from."""
    cause = {"type": "illegal_argument_exception", "reason": reason}
    error = {"root_cause": [cause], "type": "search_phase_execution_exception", "reason": reason}
    return RequestError(400, "search_phase_execution_exception", {"error": error, "status": 400})


def _check_window(body: Any) -> None:
    size = int(body.get("size", 10)) + int(body.get("from", 0))
    if size > MAX_RESULT_WINDOW:
        raise _refused(
            f"Result window is too large, from + size must be less than or equal to: "
            f"[{MAX_RESULT_WINDOW}] but was [{size}]."
        )


class FakeKnnOpenSearch(OpenSearch):
    def search(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any:
        query = (body or {}).get("query", {})
        if "knn" in query:
            ((field, spec),) = query["knn"].items()
            _check_window(body)
            if int(spec["k"]) > MAX_RESULT_WINDOW:
                raise _refused(f"[knn] requires k <= {MAX_RESULT_WINDOW}")
            if not self._has_graph(index, field):
                raise _refused(f"Field '{field}' is not built for ANN search.")
            vector = np.asarray(spec["vector"], dtype=np.float32)
            scored = [
                (
                    _inner_product_score(float(np.asarray(source[field], dtype=np.float32) @ vector)),
                    doc_id,
                    source,
                )
                for doc_id, source in self._scan(index, spec.get("filter", {"match_all": {}}))
            ]
            return self._respond(body, index, scored, min(int(spec["k"]), int(body.get("size", 10))))
        if "script_score" in query:
            spec = query["script_score"]
            script = spec["script"]
            if script.get("lang") != "knn" or script.get("source") != "knn_score":
                raise NotImplementedError(
                    f"FakeKnnOpenSearch answers only the knn_score script, not {script}"
                )
            _check_window(body)
            params = script["params"]
            field, space = params["field"], params["space_type"]
            vector = np.asarray(params["query_value"], dtype=np.float32)
            scored = []
            for doc_id, source in self._scan(index, spec.get("query", {"match_all": {}})):
                stored = np.asarray(source[field], dtype=np.float32)
                if space == "innerproduct":
                    score = _inner_product_score(float(stored @ vector))
                elif space == "cosinesimil":
                    score = 1.0 + float(stored @ vector) / float(
                        np.linalg.norm(stored) * np.linalg.norm(vector)
                    )
                else:
                    raise NotImplementedError(f"space_type {space!r} is not faked")
                if score >= float(body.get("min_score", -np.inf)):
                    scored.append((score, doc_id, source))
            return self._respond(body, index, scored, int(body.get("size", 10)))
        return super().search(body=body, index=index, **kwargs)

    def _has_graph(self, index: Any, field: str) -> bool:
        """Whether `field` was mapped with a k-NN method in an index with `index.knn: true`:
        what the plugin needs to answer a `knn` query (the exact method's index has neither)."""
        settings = self.indices.get_settings(index=index)
        mappings = self.indices.get_mapping(index=index)
        for name, found in mappings.items():
            knn = str(settings[name]["settings"]["index"].get("knn", "false")).lower() == "true"
            if not knn or "method" not in found["mappings"]["properties"].get(field, {}):
                return False
        return True

    def _scan(self, index: Any, query: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Every document the (filter) query matches, paged by id through the real server."""
        found: list[tuple[str, dict[str, Any]]] = []
        after: list[Any] | None = None
        while True:
            page_body: dict[str, Any] = {"size": 1000, "query": query, "sort": [{"_id": "asc"}]}
            if after is not None:
                page_body["search_after"] = after
            page = super().search(body=page_body, index=index)["hits"]["hits"]
            if not page:
                return found
            found.extend((hit["_id"], hit["_source"]) for hit in page)
            after = page[-1]["sort"]

    @staticmethod
    def _respond(body: Any, index: Any, scored: list[tuple[float, str, dict[str, Any]]], size: int) -> Any:
        scored.sort(key=lambda c: (-c[0], c[1]))
        wanted = body.get("_source", True)
        top = scored[:size]
        hits = [
            {
                "_index": index,
                "_id": doc_id,
                "_score": score,
                "_source": source if wanted is True else {k: source[k] for k in wanted if k in source},
            }
            for score, doc_id, source in top
        ]
        return {
            "hits": {
                "total": {"value": len(scored), "relation": "eq"},
                "max_score": top[0][0] if top else None,
                "hits": hits,
            }
        }
