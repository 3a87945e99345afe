"""The workflow starter is a port; its Step Functions adapter starts one execution per name,
on moto's Step Functions (a repeated upload event starts nothing new)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from face_dedup.ports import WorkflowStarter

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}


def test_ingest_uses_the_port_and_holds_no_aws_adapter() -> None:
    tree = ast.parse((ROOT / "src" / "face_dedup" / "ingest.py").read_text(encoding="utf-8"))
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "StepFunctionsStarter" not in classes and "WorkflowStarter" not in classes
    assert "face_dedup.ports" in imported
    assert not any((name or "").startswith(("boto3", "botocore")) for name in imported)


def test_the_same_name_starts_one_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    from face_dedup.adapters.step_functions import StepFunctionsStarter

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        client = boto3.client("stepfunctions", region_name="eu-west-1")
        arn = client.create_state_machine(
            name="dedup",
            definition=json.dumps(DEFINITION),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        starter: WorkflowStarter = StepFunctionsStarter(client, arn)
        first = starter.start("dedup-abc", {"key": "imp_abc", "tenant": "t1", "channel": "selfie"})
        again = starter.start("dedup-abc", {"key": "imp_abc", "tenant": "t1", "channel": "selfie"})
        other = starter.start("dedup-def", {"key": "imp_def", "tenant": "t1", "channel": "selfie"})
        executions = client.list_executions(stateMachineArn=arn)["executions"]
        started = client.describe_execution(executionArn=first)

    assert first == again != other
    assert first.endswith(":dedup-abc")
    assert sorted(e["name"] for e in executions) == ["dedup-abc", "dedup-def"]
    assert json.loads(started["input"]) == {"key": "imp_abc", "tenant": "t1", "channel": "selfie"}
