"""The state machine's choice states come from the decision policy's constants
(face_dedup.outcomes): every outcome the search step can decide has a branch, a case's outcomes
reach the notify task, the others do not. Read from the serialized definition the CDK emits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from face_dedup.outcomes import DECIDED, NO_CASE, OPENS_CASE, Outcome, case_to_notify
from face_dedup_infra.constructs.workflow import OUTCOME, DedupWorkflow


@pytest.fixture(scope="module")
def states() -> dict[str, Any]:
    stack = cdk.Stack(cdk.App(), "WorkflowOnly")

    def function(name: str) -> lambda_.IFunction:
        return lambda_.Function(
            stack,
            name,
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="index.handler",
            code=lambda_.Code.from_inline("def handler(event, context):\n    return {}\n"),
        )

    DedupWorkflow(
        stack,
        "Workflow",
        search=function("Search"),
        complete=function("Complete"),
        notify=function("Notify"),
        record_failure=function("RecordFailure"),
    )
    machines = Template.from_stack(stack).find_resources("AWS::StepFunctions::StateMachine")
    (machine,) = machines.values()
    # An Fn::Join of literal text and function ARN tokens: the tokens become a placeholder.
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "arn:placeholder" for p in parts)
    states: dict[str, Any] = json.loads(text)["States"]
    return states


def _branch(choice: dict[str, Any], outcome: str) -> str | None:
    """The state the choice goes to for this outcome (None: its default)."""
    for rule in choice["Choices"]:
        tests = rule.get("Or", [rule])
        if any(t["Variable"] == OUTCOME and t["StringEquals"] == outcome for t in tests):
            return str(rule["Next"])
    return None


def _reachable(states: dict[str, Any], start: str) -> list[str]:
    path, name = [], start
    while name:
        path.append(name)
        name = states[name].get("Next")
    return path


def test_every_outcome_the_policy_decides_has_its_branch(states: dict[str, Any]) -> None:
    decide = states["Decide"]
    assert decide["Type"] == "Choice"
    branches = {outcome: _branch(decide, outcome.value) for outcome in DECIDED}
    assert all(branches.values()), f"outcomes without a branch: {branches}"
    for outcome, start in branches.items():
        path = _reachable(states, str(start))
        assert path[-1] == "Done"
        opens_case = case_to_notify(outcome, "case-1") is not None
        assert ("NotifyOfficers" in path) is opens_case, (outcome, path)
        assert path[0] == ("OpenCase" if outcome in OPENS_CASE else "Enroll")


def test_the_choices_name_no_outcome_the_policy_does_not_know(states: dict[str, Any]) -> None:
    named = {t["StringEquals"] for rule in states["Decide"]["Choices"] for t in rule.get("Or", [rule])}
    assert named == {o.value for o in (*NO_CASE, *OPENS_CASE)}
    # a rejection (or anything decided before the search) takes the default: nothing more to do
    assert _branch(states["Decide"], Outcome.REJECTED.value) is None
    assert states[states["Decide"]["Default"]]["Type"] == "Succeed"
