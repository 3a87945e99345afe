"""Capacity planner (issue 15): index memory, data nodes, cost, the recall guard, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from face_dedup import capacity
from face_dedup.capacity import CapacityError, IndexMethod
from face_dedup.cli import app
from face_dedup.synthetic import FaceStatistics, genuine_scores, score_summary


def test_memory_falls_with_the_encoding_and_grows_with_m_and_copies() -> None:
    sizes = [capacity.vector_bytes(IndexMethod("hnsw", e), 128) for e in ("fp32", "fp16", "sq8")]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3
    assert capacity.vector_bytes(IndexMethod(m=64), 128) > capacity.vector_bytes(IndexMethod(m=16), 128)
    assert capacity.vector_bytes(IndexMethod("ivf"), 128) < capacity.vector_bytes(IndexMethod("hnsw"), 128)
    one = capacity.index_memory_bytes(IndexMethod(), 1_000_000, 128, replicas=0)
    assert capacity.index_memory_bytes(IndexMethod(), 1_000_000, 128, replicas=2) == pytest.approx(3 * one)


@pytest.mark.parametrize("faces", [10_000, 1_000_000, 15_000_000, 60_000_000])
def test_plan_is_the_cheapest_node_set_that_holds_the_index(faces: int) -> None:
    plan = capacity.plan(faces, zones=2)
    need = capacity.index_memory_bytes(plan.method, faces, 128, plan.replicas) * 1.2
    assert plan.data_nodes * plan.instance.knn_bytes >= need
    assert plan.data_nodes % 2 == 0 and plan.data_nodes >= 2
    assert plan.data_nodes * plan.instance.vcpus >= plan.shards  # exact: a vCPU per shard
    cost = plan.data_nodes * plan.instance.usd_per_hour
    for instance in capacity.INSTANCE_TYPES:  # nothing cheaper holds it
        nodes = max(2, math.ceil(need / instance.knn_bytes), math.ceil(plan.shards / instance.vcpus))
        nodes += nodes % 2
        assert nodes * instance.usd_per_hour >= cost - 1e-9
    assert sum(plan.monthly.values()) > 0 and plan.rekognition_monthly > 0


def test_rekognition_is_priced_by_tier() -> None:
    plan = capacity.plan(1_000, enrollments_per_month=1_000_000)  # 2M calls: 1M at each of two tiers
    assert plan.rekognition_monthly == pytest.approx(1_000_000 * 0.001 + 1_000_000 * 0.0008 + 1_000 * 0.00001)


def test_methods_are_refused_beyond_what_was_measured() -> None:
    capacity.check_method(capacity.DEFAULT_METHOD, 100_000)
    with pytest.raises(CapacityError, match="1,000,000 faces"):
        capacity.check_method(capacity.DEFAULT_METHOD, 1_000_000)
    with pytest.raises(CapacityError, match="15,000,000 faces"):
        capacity.check_method(capacity.DEFAULT_METHOD, 15_000_000)
    with pytest.raises(CapacityError, match="not shown"):
        capacity.check_method(IndexMethod(m=8), 100_000)
    with pytest.raises(CapacityError, match="not measured to"):
        capacity.check_method(IndexMethod(oversample=1), 100_000)
    with pytest.raises(CapacityError, match="not measured to"):
        capacity.check_method(IndexMethod("ivf", "sq8"), 100_000)
    # The exact scan holds at any size by construction; measured (cost and recall) to 15M.
    capacity.check_method(capacity.EXACT_METHOD, 15_000_000)
    capacity.check_method(IndexMethod("exact", m=4, oversample=1), 1_000_000)  # graph knobs: moot
    with pytest.raises(CapacityError, match=r"60,000,000 faces.*measured up to 15,000,000"):
        capacity.check_method(capacity.EXACT_METHOD, 60_000_000)
    with pytest.raises(CapacityError):
        IndexMethod("lsh")
    with pytest.raises(CapacityError):
        IndexMethod(encoding="int4")


def test_a_domain_too_small_for_the_index_is_refused_naming_what_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capacity.check_deployment(100_000, instance_type="r7g.large.search", data_nodes=2)
    monkeypatch.setitem(capacity.VALIDATED, ("hnsw", "fp32"), 15_000_000)
    capacity.check_deployment(15_000_000, instance_type="r7g.xlarge.search", data_nodes=4)
    with pytest.raises(CapacityError, match=r"need .* GiB.*Use \d+ x r7g"):
        capacity.check_deployment(15_000_000, instance_type="r7g.large.search", data_nodes=2)
    with pytest.raises(CapacityError, match="not known"):
        capacity.check_deployment(1_000, instance_type="t3.small.search", data_nodes=2)


def test_cli_prints_the_plan_and_its_json() -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["plan-capacity", "1000000"])
    assert text.exit_code == 0, text.output
    assert "data nodes: 2 x r7g.large.search" in text.output and "Rekognition" in text.output
    data = json.loads(runner.invoke(app, ["plan-capacity", "15000000", "--json"]).output)
    assert data["data_nodes"] == capacity.plan(15_000_000).data_nodes
    assert data["prices_as_of"] == capacity.PRICES_AS_OF
    bad = runner.invoke(app, ["plan-capacity", "1000", "--encoding", "int4"])
    assert bad.exit_code == 1 and "int4" in bad.output
    # The JSON says what the text says: an unvalidated or undeployable method is marked.
    for args, ok in (
        (["1000000"], True),
        (["1000000", "--method", "hnsw"], False),  # HNSW: measured to 100k only
        (["100000", "--encoding", "sq8"], False),  # held 99.62% but the stack cannot create it
    ):
        data = json.loads(runner.invoke(app, ["plan-capacity", *args, "--json"]).output)
        assert data["validated_and_deployable"] is ok, args
        assert data["recall_verdict"].startswith("validated") == ("hnsw" not in args), args
    sq8 = "\n".join(capacity.render(capacity.plan(100_000, method=IndexMethod("hnsw", "sq8"))))
    assert "NOT DEPLOYABLE" in sq8
    for args in (["1000", "--enrollments", "-5"], ["1000", "--zones", "4", "--replicas", "3"]):
        refused = runner.invoke(app, ["plan-capacity", *args])
        assert refused.exit_code == 1 and "error" in refused.output, args


def test_generator_refits_its_own_statistics() -> None:
    """A registry drawn from known statistics, refitted, gives the same score distributions."""
    rng = np.random.default_rng(0)
    dim = 32
    truth = FaceStatistics(
        mean=rng.normal(size=dim) * 0.1,
        between=np.diag(np.linspace(0.3, 0.05, dim)),
        within=np.diag(np.linspace(0.12, 0.04, dim)),
        fitted_people=0,
        fitted_photos=0,
    )
    counts = [int(c) for c in rng.integers(2, 5, size=600)]
    templates, people = truth.like(rng, counts)
    refit = FaceStatistics.fit(templates, [str(p) for p in people])
    again, again_people = refit.like(np.random.default_rng(1), counts)

    def summary(t: NDArray[np.float32], p: NDArray[np.int64]) -> dict[str, float]:
        gram = t[:400] @ t[:400].T
        upper = np.triu_indices(400, k=1)
        impostor = gram[upper][p[:400][upper[0]] != p[:400][upper[1]]]
        return score_summary(genuine_scores(t, p), impostor)

    want, got = summary(templates, people), summary(again, again_people)
    for key in ("genuine_mean", "impostor_mean", "impostor_std"):
        assert got[key] == pytest.approx(want[key], abs=0.03), key
    with pytest.raises(ValueError, match="two or more photos"):
        FaceStatistics.fit(templates[:5], ["a", "b", "c", "d", "e"])


def test_the_default_is_the_cheapest_validated_deployable_method_at_each_size() -> None:
    """Issue 15: HNSW fp32 where it was measured to hold (100k), the exact scan above it, and
    nothing beyond what was measured; 8-bit and IVF are not deployable on the stack."""
    assert capacity.default_method(100_000) == capacity.DEFAULT_METHOD
    assert capacity.default_method(100_001).name == "exact"
    assert capacity.default_method(15_000_000) == capacity.EXACT_METHOD
    with pytest.raises(CapacityError, match="no deployable index method is validated at 60,000,000"):
        capacity.default_method(60_000_000)
    for size in (10_000, 1_000_000, 15_000_000):
        chosen = capacity.default_method(size)
        capacity.check_deployable(chosen)
        capacity.check_method(chosen, size)
        cheapest = min(
            capacity.plan(size, method=m).domain_monthly
            for m in capacity.PREFERENCE
            if capacity.VALIDATED.get((m.name, m.encoding), 0) >= size
        )
        assert capacity.plan(size, method=chosen).domain_monthly == cheapest
    for method in (IndexMethod("hnsw", "sq8"), IndexMethod("ivf", "fp32")):
        with pytest.raises(CapacityError, match="cannot be deployed"):
            capacity.check_deployable(method)
    # The scan reads fp32 vectors whatever is asked: an encoding on it is refused, not relabelled.
    with pytest.raises(CapacityError, match="applies to hnsw only"):
        IndexMethod("exact", "fp16")


def test_exact_search_gets_shards_and_vcpus_for_its_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = capacity.plan(1_000_000), capacity.plan(15_000_000)
    assert small.method.name == large.method.name == "exact"
    assert large.shards == capacity.exact_shards(15_000_000) > small.shards >= 1
    for plan in (small, large):
        assert plan.search_seconds <= capacity.EXACT_LATENCY_S
        assert plan.data_nodes * plan.instance.vcpus >= plan.shards
        assert plan.searches_per_s > 0
    text = "\n".join(capacity.render(large))
    assert f"{large.shards} primary shard(s)" in text and "assumed for the JVM script" in text
    # Nodes chosen by hand with fewer vCPUs than the scan's shards are refused (a script 20x
    # slower than assumed: ~90 shards; one big node holds the vectors but has 32 vCPUs).
    exact = capacity.EXACT_METHOD
    capacity.check_deployment(15_000_000, instance_type="r7g.8xlarge.search", data_nodes=1, method=exact)
    monkeypatch.setattr(capacity, "EXACT_SCRIPT_FACTOR", 200.0)
    with pytest.raises(CapacityError, match=r"32 vCPUs.*\d\d primary shards.*Use \d+ x r7g"):
        capacity.check_deployment(15_000_000, instance_type="r7g.8xlarge.search", data_nodes=1, method=exact)
