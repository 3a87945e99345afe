"""A named fake for the one thing no offline OpenSearch stand-in does: the `knn` query.

`FakeKnnOpenSearch` is a real `opensearchpy.OpenSearch` client talking to a real
OpenSearch-compatible server (osmem-server: index creation with `knn_vector` mappings and
their dimension checks, bulk, filters, deletes, counts, search_after all run there). Only a
search whose query is `knn` is answered here, by an exact scan of the documents that match
the query's filter, in OpenSearch's response shape and with faiss' inner-product score
convention (1 + ip).

What this cannot check, and the real-cluster run (OPENSEARCH_URL) does: HNSW's
approximation (recall below 1 as the index grows), the engine's own filtered search and score
conventions, `ef_search`, and the known engine bugs around min_score with filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from opensearchpy import OpenSearch


class FakeKnnOpenSearch(OpenSearch):  # type: ignore[misc]
    def search(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any:
        knn = (body or {}).get("query", {}).get("knn")
        if not knn:
            return super().search(body=body, index=index, **kwargs)
        ((field, spec),) = knn.items()
        query = np.asarray(spec["vector"], dtype=np.float32)
        candidates: list[tuple[float, str, dict[str, Any]]] = []
        after: list[Any] | None = None
        while True:
            page_body: dict[str, Any] = {
                "size": 1000,
                "query": spec.get("filter", {"match_all": {}}),
                "sort": [{"_id": "asc"}],
            }
            if after is not None:
                page_body["search_after"] = after
            page = super().search(body=page_body, index=index)["hits"]["hits"]
            if not page:
                break
            for hit in page:
                vector = np.asarray(hit["_source"][field], dtype=np.float32)
                candidates.append((1.0 + float(vector @ query), hit["_id"], hit["_source"]))
            after = page[-1]["sort"]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        wanted = body.get("_source", True)
        top = candidates[: min(int(spec["k"]), int(body.get("size", 10)))]
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
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": top[0][0] if top else None,
                "hits": hits,
            }
        }
