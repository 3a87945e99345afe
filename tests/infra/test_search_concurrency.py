"""The workflow's index concurrency is derived at synth from the capacity plan (issue 15 review):
exact searches scan a copy of the index each and share the data nodes' vCPUs, so as many at once
as the old fixed 8 per node (48 on 15M faces' 6 nodes, ~18 s each) ran past the index client's
10 s timeout. The bound is capacity.index_concurrency_per_node, the planner's formula."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from face_dedup import capacity, wiring

INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))

from face_dedup_infra.config import DeploymentConfig  # noqa: E402
from tests.infra.test_deployability import functions_by_name  # noqa: E402


def config(**context: object) -> DeploymentConfig:
    return DeploymentConfig.from_context({f"face-dedup:{k}": v for k, v in context.items()}.get, INFRA)


def seconds_each(plan: capacity.Plan, per_node: int) -> float:
    """Wall time of each of `per_node` x nodes exact searches run at once on the plan's domain:
    every one scans a whole copy, all of them share every vCPU (independent of the formula)."""
    at_once = per_node * plan.data_nodes
    return at_once * capacity.exact_search_cpu_s(plan.faces) / (plan.data_nodes * plan.instance.vcpus)


@pytest.mark.parametrize("faces", [1_000_000, 15_000_000])
def test_concurrent_exact_searches_finish_within_the_client_timeout(faces: int) -> None:
    plan = capacity.plan(faces)
    assert plan.method.name == "exact"
    derived = config(**{"registry-size": faces}).concurrency_per_node
    assert derived == plan.concurrency_per_node >= 1
    assert seconds_each(plan, derived) <= capacity.CONCURRENT_SEARCH_SHARE * capacity.INDEX_CLIENT_TIMEOUT_S
    # the bound is tight: one more per node would pass the share of the timeout (or the default caps it)
    assert (
        derived == capacity.DEFAULT_INDEX_CONCURRENCY_PER_NODE
        or seconds_each(plan, derived + 1)
        > capacity.CONCURRENT_SEARCH_SHARE * capacity.INDEX_CLIENT_TIMEOUT_S
    )


def test_at_15m_the_old_default_is_refused_and_a_lower_one_derived() -> None:
    plan = capacity.plan(15_000_000)
    # what the review found: 8 per node, 48 at once, past the client's timeout
    assert seconds_each(plan, 8) > capacity.INDEX_CLIENT_TIMEOUT_S
    assert config(**{"registry-size": 15_000_000}).concurrency_per_node == 2
    with pytest.raises(capacity.CapacityError, match=r"index-concurrency-per-node=8 is too many.*at most 2"):
        config(**{"registry-size": 15_000_000, "index-concurrency-per-node": "8"})
    assert (
        config(**{"registry-size": 15_000_000, "index-concurrency-per-node": "1"}).concurrency_per_node == 1
    )
    # at 1M the default holds
    assert config(**{"registry-size": 1_000_000, "index-concurrency-per-node": 8}).concurrency_per_node == 8


def test_graph_search_keeps_the_asked_value_and_nonsense_is_refused() -> None:
    assert config(**{"registry-size": 100_000}).concurrency_per_node == 8
    assert config(**{"registry-size": 100_000, "index-concurrency-per-node": 20}).concurrency_per_node == 20
    for bogus in ("0", "abc", 1.5):
        with pytest.raises(capacity.CapacityError, match="index-concurrency-per-node"):
            config(**{"registry-size": 100_000, "index-concurrency-per-node": bogus})


def test_the_planner_prints_the_same_bound() -> None:
    plan = capacity.plan(15_000_000)
    assert plan.as_dict()["index_concurrency_per_node"] == 2
    assert any(
        line.startswith("search concurrency: 2 per data node (12 at once") for line in capacity.render(plan)
    )


def test_the_functions_client_uses_the_timeout_the_bound_assumes(tmp_path: Path) -> None:
    from face_dedup import bootstrap
    from face_dedup.settings import Settings

    settings = Settings(tmp_path, tmp_path, opensearch_url="http://localhost:9200", opensearch_auth="none")
    client = bootstrap._opensearch_client(settings)
    assert client.transport.connection_pool.connections[0].timeout == capacity.INDEX_CLIENT_TIMEOUT_S


def test_the_synthesized_stack_reserves_the_derived_concurrency(tmp_path: Path) -> None:
    from aws_cdk.assertions import Template

    from app import build_app

    for name in ("runtime", "models"):
        (tmp_path / "layers" / name).mkdir(parents=True)
        (tmp_path / "layers" / name / "README").write_text("placeholder\n")
    plan = capacity.plan(15_000_000)
    context = {
        "face-dedup:layers-dir": str(tmp_path / "layers"),
        "face-dedup:registry-size": 15_000_000,
        "face-dedup:opensearch-data-nodes": plan.data_nodes,  # cdk.json pins 2
    }
    _, stack = build_app(str(tmp_path / "cdk.out"), context)
    template: dict[str, Any] = dict(Template.from_stack(stack).to_json())
    resources = template["Resources"]
    at_once = 2 * plan.data_nodes
    by_name = functions_by_name(template)
    for role in ("search", "complete"):
        _, fn = by_name[wiring.FUNCTIONS[role].name]
        assert fn["Properties"]["ReservedConcurrentExecutions"] == at_once, role
    (mapping,) = (
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping" and "ScalingConfig" in r["Properties"]
    )
    assert mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == at_once
