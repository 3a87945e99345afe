"""The CDK app sizes the search domain with the capacity planner's formulas and refuses at
synth a registry size its index method was not measured to serve (issue 15)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))

from face_dedup import capacity  # noqa: E402
from face_dedup_infra.config import DeploymentConfig  # noqa: E402


def config(**context: object) -> DeploymentConfig:
    return DeploymentConfig.from_context({f"face-dedup:{k}": v for k, v in context.items()}.get, INFRA)


@pytest.mark.parametrize("faces", [10_000, 100_000])
def test_unset_nodes_come_from_the_plan(faces: int) -> None:
    planned = capacity.plan(faces, zones=2)
    chosen = config(**{"registry-size": faces})
    assert (chosen.opensearch_instance_type, chosen.opensearch_data_nodes) == (
        planned.instance.name,
        planned.data_nodes,
    )
    assert chosen.opensearch_volume_gb == planned.volume_gb


def test_a_registry_beyond_the_measured_recall_is_refused_at_synth() -> None:
    with pytest.raises(capacity.CapacityError, match=r"60,000,000 faces.*bench/index_recall.py"):
        config(**{"registry-size": 60_000_000})
    # HNSW was measured to hold to 100k only: asking for it at 1M is refused, naming the rest.
    with pytest.raises(
        capacity.CapacityError, match=r"hnsw .* 1,000,000 faces.*exact fp32 \(to 15,000,000\)"
    ):
        config(**{"registry-size": 1_000_000, "index-method": "hnsw"})
    with pytest.raises(capacity.CapacityError, match="cannot be deployed"):
        config(**{"registry-size": 100_000, "index-method": "hnsw", "index-encoding": "sq8"})


@pytest.mark.parametrize(
    ("faces", "context", "expected"),
    [
        (100_000, {}, ("hnsw", "fp32", 1)),
        (100_000, {"index-encoding": "fp16", "index-method": "hnsw"}, ("hnsw", "fp16", 1)),
        (100_000, {"index-method": "exact"}, ("exact", "fp32", 1)),
        (1_000_000, {}, ("exact", "fp32", capacity.exact_shards(1_000_000))),
        (15_000_000, {}, ("exact", "fp32", capacity.exact_shards(15_000_000))),
    ],
)
def test_the_method_is_chosen_by_size_or_context_and_reaches_the_functions(
    faces: int, context: dict[str, str], expected: tuple[str, str, int]
) -> None:
    chosen = config(**{"registry-size": faces, **context})
    assert (chosen.method.name, chosen.method.encoding, chosen.index_shards) == expected
    planned = capacity.plan(faces, method=chosen.method)
    assert (chosen.opensearch_instance_type, chosen.opensearch_data_nodes) == (
        planned.instance.name,
        planned.data_nodes,
    )


def test_explicit_nodes_too_small_for_the_index_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    config(
        **{
            "registry-size": 100_000,
            "opensearch-instance-type": "r7g.large.search",
            "opensearch-data-nodes": 2,
        }
    )
    # Were the method measured at 15M, two small nodes would still not hold its graphs.
    monkeypatch.setitem(capacity.VALIDATED, ("hnsw", "fp32"), 15_000_000)
    with pytest.raises(capacity.CapacityError, match=r"k-NN graphs.*Use \d+ x"):
        DeploymentConfig(INFRA, registry_size=15_000_000, opensearch_data_nodes=2)
    planned = config(**{"registry-size": 15_000_000})
    assert planned.opensearch_data_nodes == capacity.plan(15_000_000).data_nodes > 2
    with pytest.raises(capacity.CapacityError, match="not known"):
        config(**{"opensearch-instance-type": "m5.large.search"})


def test_the_adapter_deploys_the_method_the_planner_validated() -> None:
    from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex, index_body

    index = OpenSearchVectorIndex(object(), "faces", 128)  # type: ignore[arg-type]
    body = index_body(128, engine="faiss", **index._params)
    method = body["mappings"]["properties"]["vector"]["method"]
    assert method["name"] == capacity.DEFAULT_METHOD.name
    assert method["parameters"] == {
        "m": capacity.DEFAULT_METHOD.m,
        "ef_construction": capacity.DEFAULT_METHOD.ef_construction,
    }
    assert body["settings"]["index"]["knn.algo_param.ef_search"] == capacity.DEFAULT_METHOD.ef_search
    assert index._oversample == capacity.DEFAULT_METHOD.oversample


def test_an_encoding_named_alone_is_deployed_or_refused_never_dropped() -> None:
    """`-c face-dedup:index-encoding=fp16` (what BENCHMARKS.md tells a registry to pass) used to
    be ignored without `index-method`: the functions got fp32 and an 8-bit ask synthesized."""
    fp16 = config(**{"registry-size": 100_000, "index-encoding": "fp16"})
    assert (fp16.method.name, fp16.method.encoding) == ("hnsw", "fp16")
    with pytest.raises(capacity.CapacityError, match="hnsw sq8 cannot be deployed"):
        config(**{"registry-size": 100_000, "index-encoding": "sq8"})
    with pytest.raises(capacity.CapacityError, match=r"fp16 .* 1,000,000 faces"):
        config(**{"registry-size": 1_000_000, "index-encoding": "fp16"})  # HNSW is not validated there
    with pytest.raises(capacity.CapacityError, match="applies to hnsw only"):
        config(**{"registry-size": 1_000_000, "index-method": "exact", "index-encoding": "fp16"})
    assert config(**{"registry-size": 1_000_000, "index-encoding": "fp32"}).method.name == "exact"


@pytest.mark.parametrize("bogus", ["abc", "1e6", "-5", "1.5", True, 1.9, "", "٣"])
def test_a_bogus_registry_size_is_refused_naming_the_option(bogus: object) -> None:
    # int() would have read true as 1 face and 1.9 as 1, and "abc" as a bare ValueError.
    with pytest.raises(capacity.CapacityError, match="face-dedup:registry-size must be a whole number"):
        config(**{"registry-size": bogus})
    assert config(**{"registry-size": "1000000"}).registry_size == 1_000_000  # -c gives strings


def test_the_production_profiles_zones_plan_with_one_replica() -> None:
    """Zone awareness keeps a shard's two copies in different zones: one replica survives a zone
    loss with 3 zones too. The planner asked for zones - 1 replicas, which the stack (one
    replica) never has, so every 3-zone config was refused."""
    for faces in (100_000, 1_000_000, 15_000_000):
        chosen = config(**{"registry-size": faces, "opensearch-zones": 3})
        assert chosen.opensearch_data_nodes % 3 == 0
    with pytest.raises(capacity.CapacityError, match="at least 1 replica"):
        capacity.plan(100_000, zones=2, replicas=0)
    with pytest.raises(capacity.CapacityError, match="zones 1, 2 or 3"):
        capacity.plan(100_000, zones=4, replicas=3)


def test_the_refusal_of_pinned_nodes_says_where_they_are_pinned() -> None:
    """cdk.json pins the node type and count; `-c registry-size=15000000` alone is refused, and
    "leave both unset" cannot be done with -c: the message names the file."""
    import json

    pinned = json.loads((INFRA / "cdk.json").read_text())["context"]
    context = {**pinned, "face-dedup:registry-size": 15_000_000}
    with pytest.raises(capacity.CapacityError, match=r"Use 6 x r7g.large.search .*infra/cdk.json sets both"):
        DeploymentConfig.from_context(context.get, INFRA)
