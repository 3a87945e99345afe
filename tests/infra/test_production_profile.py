"""The README's production profile (three zones, three dedicated masters) synthesizes: the VPC
has a subnet in each zone the domain spans. It used to fail at synth ("provide a subnet for each
AZ"): the VPC had at most two zones, and an environment-agnostic stack gets two from CDK."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))


def production_context() -> dict[str, str]:
    """The `-c face-dedup:...` options of the README's "Production profile" paragraph."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = text[text.index("Production profile:") :].split("\n\n", 1)[0]
    options = dict(re.findall(r"-c\s+(face-dedup:[a-z-]+)=(\S+?)`?(?=\s|$)", paragraph))
    assert options.get("face-dedup:opensearch-zones") == "3", paragraph  # what this test is about
    return options


def synth(tmp: Path, context: dict[str, Any]) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    app, stack = build_app(str(tmp / "cdk.out"), {"face-dedup:layers-dir": str(tmp / "layers"), **context})
    app.synth()  # cdk-nag runs here too
    return dict(Template.from_stack(stack).to_json())


def of(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def domain_zones(template: dict[str, Any]) -> tuple[int, list[Any]]:
    """The domain's zone count and the availability zones of its subnets."""
    (domain,) = of(template, "AWS::OpenSearchService::Domain").values()
    props = domain["Properties"]
    subnets = of(template, "AWS::EC2::Subnet")
    azs = [subnets[ref["Ref"]]["Properties"]["AvailabilityZone"] for ref in props["VPCOptions"]["SubnetIds"]]
    return props["ClusterConfig"]["ZoneAwarenessConfig"]["AvailabilityZoneCount"], azs


def get_azs(i: int) -> dict[str, Any]:
    return {"Fn::Select": [i, {"Fn::GetAZs": ""}]}


@pytest.fixture(autouse=True)
def _environment_agnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)


def test_the_production_profile_spans_three_zones(tmp_path: Path) -> None:
    template = synth(tmp_path, production_context())
    count, azs = domain_zones(template)
    assert count == 3
    # Without an account and region: the deploying region's first three zones, picked at deploy time.
    assert azs == [get_azs(0), get_azs(1), get_azs(2)]
    assert len(of(template, "AWS::EC2::Subnet")) == 3
    (domain,) = of(template, "AWS::OpenSearchService::Domain").values()
    assert domain["Properties"]["ClusterConfig"]["DedicatedMasterCount"] == 3


def test_the_dev_profile_keeps_its_two_zones(tmp_path: Path) -> None:
    template = synth(tmp_path, {})
    assert domain_zones(template) == (2, [get_azs(0), get_azs(1)])
    assert len(of(template, "AWS::EC2::Subnet")) == 2


def test_a_stack_tied_to_a_region_uses_its_zones_or_says_it_has_too_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials the CDK CLI ties the stack to the account and region (CDK_DEFAULT_*) and
    looks the region's zones up (kept in cdk.context.json): the VPC uses those."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    lookup = "availability-zones:account=123456789012:region=eu-west-1"
    found = {lookup: ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}
    template = synth(tmp_path / "three", {**production_context(), **found})
    assert domain_zones(template) == (3, ["eu-west-1a", "eu-west-1b", "eu-west-1c"])
    with pytest.raises(ValueError, match=r"opensearch-zones=3, but the stack's region offers 2"):
        synth(tmp_path / "two", {**production_context(), lookup: ["eu-west-1a", "eu-west-1b"]})
