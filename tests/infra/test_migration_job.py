"""The model-pack migration job (context `face-dedup:migration=true`) in the synthesized template.

moto cannot run a Distributed Map (no ItemReader, batcher or result writer), so what Step
Functions would run is checked here on the ASL the CDK app emits, and the item processor and the
cut-over step are run on moto in tests/integration/test_cloud_migration.py. cdk-nag runs on
this synth too (build_app fails on an unacknowledged finding)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from face_dedup import permissions, wiring
from tests.infra.test_deployability import _of, functions_by_name, statements

CONCURRENCY = 7


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("migration")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    context = {
        "face-dedup:layers-dir": str(tmp / "layers"),
        "face-dedup:migration": "true",
        "face-dedup:migration-max-concurrency": str(CONCURRENCY),
        "face-dedup:migration-tolerated-failure-percent": "2",
    }
    _, stack = build_app(str(tmp / "cdk.out"), context)
    return dict(Template.from_stack(stack).to_json())


def _definition(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The migration state machine's logical id and its ASL (tokens as {"ref": logical id})."""
    found = [
        (logical, resource)
        for logical, resource in _of(template, "AWS::StepFunctions::StateMachine").items()
        if logical.startswith("Migration")
    ]
    assert len(found) == 1
    logical, resource = found[0]
    parts = resource["Properties"]["DefinitionString"]["Fn::Join"][1]

    def token(part: dict[str, Any]) -> str:
        ref = part.get("Ref") or part.get("Fn::GetAtt", [""])[0]
        return f"@@{ref}@@"

    text = "".join(p if isinstance(p, str) else token(p) for p in parts)
    return logical, json.loads(text)


def test_the_job_is_a_bounded_distributed_map_over_the_faces_bucket_listing(template: dict[str, Any]) -> None:
    _, asl = _definition(template)
    states = asl["States"]
    assert asl["StartAt"] == "Plan"
    # the tenant's prefix in the faces bucket: <s3_prefix><tenant>/
    assert states["Plan"]["Parameters"]["prefix.$"] == "States.Format('faces/{}/', $.tenant)"
    records = states["Records"]
    assert records["Type"] == "Map"
    assert records["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    faces = next(k for k in _of(template, "AWS::S3::Bucket") if k.startswith("StorageFaces"))
    reader = records["ItemReader"]
    assert reader["Resource"].endswith(":states:::s3:listObjectsV2")
    assert reader["Parameters"] == {"Bucket": f"@@{faces}@@", "Prefix.$": "$.prefix"}
    assert records["ItemSelector"] == {"key.$": "$$.Map.Item.Value.Key"}  # keys only, nothing else
    assert records["ItemBatcher"]["BatchInput"] == {"tenant.$": "$.tenant", "target_pack.$": "$.target_pack"}
    assert 1 <= records["ItemBatcher"]["MaxItemsPerBatch"] <= 500
    assert records["MaxConcurrency"] == CONCURRENCY  # bounded, from the context setting
    assert records["ToleratedFailurePercentage"] == 2
    results = next(k for k in _of(template, "AWS::S3::Bucket") if k.startswith("MigrationResults"))
    assert records["ResultWriter"]["Parameters"]["Bucket"] == f"@@{results}@@"
    processor = records["ItemProcessor"]["States"]
    (reembed,) = processor.values()
    functions = functions_by_name(template)
    assert reembed["Resource"] == f"@@{functions[wiring.MIGRATE][0]}@@"
    assert "RecordsFailed" not in json.dumps(reembed.get("Retry", []))  # a failed record is not retried
    # cut-over only when asked, after the map, by the switch function
    cutover = states["CutOver"]
    assert records["Next"] == "CutOver"
    assert cutover["Choices"] == [{"Variable": "$.cutover", "BooleanEquals": True, "Next": "Switch"}]
    assert states["Switch"]["Resource"] == f"@@{functions[wiring.MIGRATE_SWITCH][0]}@@"


def _granted(template: dict[str, Any], name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    _, fn = functions_by_name(template)[name]
    return fn, statements(template, fn["Properties"]["Role"]["Fn::GetAtt"][0])


def _actions(granted: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in granted:
        actions = statement["Action"]
        found |= {actions} if isinstance(actions, str) else set(actions)
    return found


def test_the_item_processor_can_only_read_crops_and_write_templates(template: dict[str, Any]) -> None:
    fn, granted = _granted(template, wiring.MIGRATE)
    actions = _actions(granted) - {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
    spec = wiring.OPTIONAL_FUNCTIONS[wiring.MIGRATE]
    needs = permissions.needs(spec)
    assert actions == {n.action for n in needs | permissions.key_needs(needs)}
    assert actions == {
        "s3:GetObject",
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",  # a record of several photos: its templates
        "dynamodb:UpdateItem",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    }
    tables = {
        k: v for k, v in _of(template, "AWS::DynamoDB::Table").items() if not k.startswith("TablesRecords")
    }
    buckets = {k for k in _of(template, "AWS::S3::Bucket") if not k.startswith("StorageFaces")}
    text = json.dumps(granted)
    assert not any(k in text for k in (*tables, *buckets))  # the records table and faces bucket only
    props = fn["Properties"]
    assert "VpcConfig" not in props  # never reaches the index
    assert props["ReservedConcurrentExecutions"] == CONCURRENCY
    assert len(props["Layers"]) == 2  # the models layer: the target pack's files


def test_the_cutover_step_switches_records_and_audits_only(template: dict[str, Any]) -> None:
    _, granted = _granted(template, wiring.MIGRATE_SWITCH)
    actions = _actions(granted)
    assert not any(a.startswith("s3:") for a in actions)
    assert {"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:Query"} <= actions
    assert not {"dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:BatchWriteItem"} & actions


def test_the_finish_step_erases_kept_templates_only(template: dict[str, Any]) -> None:
    fn, granted = _granted(template, wiring.MIGRATE_FINISH)
    actions = _actions(granted) - {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
    assert actions == {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",  # its audit entry
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    }
    assert fn["Properties"]["ReservedConcurrentExecutions"] == 1
    values = [o["Value"] for o in template["Outputs"].values()]
    assert {"Ref": functions_by_name(template)[wiring.MIGRATE_FINISH][0]} in values


@pytest.mark.parametrize("bad", [0, -1, 1001])
def test_an_unbounded_concurrency_is_refused_at_synth(bad: int) -> None:
    from face_dedup_infra.constructs.migration import MAX_CONCURRENCY_LIMIT, MigrationOptions

    assert MAX_CONCURRENCY_LIMIT == 1000
    with pytest.raises(ValueError, match="max-concurrency"):
        MigrationOptions(enabled=True, max_concurrency=bad)
    context = {"face-dedup:migration": "true", "face-dedup:migration-max-concurrency": str(bad)}
    with pytest.raises(ValueError):
        MigrationOptions.from_context(context.get)


def test_the_job_and_its_results_are_stack_outputs(template: dict[str, Any]) -> None:
    logical, _ = _definition(template)
    results = next(k for k in _of(template, "AWS::S3::Bucket") if k.startswith("MigrationResults"))
    values = [o["Value"] for o in template["Outputs"].values()]
    assert {"Ref": logical} in values and {"Ref": results} in values
