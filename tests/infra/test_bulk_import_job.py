"""The bulk de-duplication job (context `face-dedup:bulk-import=true`) in the synthesized template.

moto cannot run a Distributed Map (no ItemReader, batcher or result writer): the ASL the CDK app
emits is checked here, and the item processor is run on moto in
tests/integration/test_cloud_bulk.py. cdk-nag runs on this synth too (build_app fails on an
unacknowledged finding)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from face_dedup import permissions, wiring
from tests.infra.test_deployability import _of, functions_by_name, statements
from tests.infra.test_migration_job import _actions

CONCURRENCY = 5
JOIN_CONCURRENCY = 3


def _synth(tmp_path_factory: pytest.TempPathFactory, flags: dict[str, str]) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("bulk")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    _, stack = build_app(str(tmp / "cdk.out"), {"face-dedup:layers-dir": str(tmp / "layers"), **flags})
    return dict(Template.from_stack(stack).to_json())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _synth(
        tmp_path_factory,
        {
            "face-dedup:bulk-import": "true",
            "face-dedup:bulk-import-max-concurrency": str(CONCURRENCY),
            "face-dedup:bulk-import-tolerated-failure-percent": "1",
            "face-dedup:bulk-import-join-concurrency": str(JOIN_CONCURRENCY),
        },
    )


def test_nothing_changes_without_the_flag(tmp_path_factory: pytest.TempPathFactory) -> None:
    default = _synth(tmp_path_factory, {})
    assert not [k for k in default["Resources"] if k.startswith("BulkImport")]
    assert wiring.BULK_ANALYSE not in functions_by_name(default)
    assert not [k for k in default.get("Outputs", {}) if k.startswith("BulkImport")]


def _definition(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [
        (logical, resource)
        for logical, resource in _of(template, "AWS::StepFunctions::StateMachine").items()
        if logical.startswith("BulkImport")
    ]
    assert len(found) == 1
    logical, resource = found[0]
    parts = resource["Properties"]["DefinitionString"]["Fn::Join"][1]

    def token(part: dict[str, Any]) -> str:
        ref = part.get("Ref") or part.get("Fn::GetAtt", [""])[0]
        return f"@@{ref}@@"

    return logical, json.loads("".join(p if isinstance(p, str) else token(p) for p in parts))


def test_the_job_is_a_bounded_distributed_map_over_the_manifest_rows(template: dict[str, Any]) -> None:
    _, asl = _definition(template)
    states = asl["States"]
    assert asl["StartAt"] == "Plan"
    plan = states["Plan"]["Parameters"]
    assert plan["manifest.$"] == "States.Format('bulk/{}/{}/manifest.csv', $.tenant, $.batch)"
    assert plan["job.$"] == "$$.Execution.Name"
    rows = states["Rows"]
    assert rows["Type"] == "Map" and rows["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    uploads = next(k for k in _of(template, "AWS::S3::Bucket") if k.startswith("StorageUploads"))
    reader = rows["ItemReader"]
    assert reader["Resource"].endswith(":states:::s3:getObject")
    assert reader["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    assert reader["Parameters"] == {"Bucket": f"@@{uploads}@@", "Key.$": "$.manifest"}
    # the row's index (manifest order), its file and application id: nothing else of the row
    assert rows["ItemSelector"] == {
        "row.$": "$$.Map.Item.Index",
        "file.$": "$$.Map.Item.Value.file",
        "application_id.$": "$$.Map.Item.Value.application_id",
    }
    assert rows["ItemBatcher"]["BatchInput"] == {
        "tenant.$": "$.tenant",
        "batch.$": "$.batch",
        "job.$": "$.job",
    }
    assert 1 <= rows["ItemBatcher"]["MaxItemsPerBatch"] <= 500
    assert rows["MaxConcurrency"] == CONCURRENCY
    assert rows["ToleratedFailurePercentage"] == 1
    results = next(k for k in _of(template, "AWS::S3::Bucket") if k.startswith("BulkImportResults"))
    assert rows["ResultWriter"]["Parameters"]["Bucket"] == f"@@{results}@@"
    # the children's outputs only: with the default (NONE) each child's input, the rows' file
    # names and application ids, would be written too
    assert rows["ResultWriter"]["WriterConfig"] == {"OutputType": "JSON", "Transformation": "COMPACT"}
    (analyse,) = rows["ItemProcessor"]["States"].values()
    assert analyse["Resource"] == f"@@{functions_by_name(template)[wiring.BULK_ANALYSE][0]}@@"
    retried = {e for r in analyse.get("Retry", []) for e in r["ErrorEquals"]}
    assert "TransientError" in retried and "BadItem" not in retried
    assert rows["Next"] == "Prepare"


def test_after_the_rows_the_job_joins_in_parallel_then_decides_in_order(template: dict[str, Any]) -> None:
    _, asl = _definition(template)
    states = asl["States"]
    by_name = functions_by_name(template)
    prepare = states["Prepare"]
    assert prepare["Resource"] == f"@@{by_name[wiring.BULK_PREPARE][0]}@@"
    assert prepare["Parameters"] == {"tenant.$": "$.tenant", "batch.$": "$.batch", "job.$": "$.job"}
    assert prepare["ResultPath"] == "$.plan" and prepare["Next"] == "Join"
    join = states["Join"]
    assert join["Type"] == "Map" and join["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert join["ItemsPath"] == "$.plan.chunks"
    assert join["ItemSelector"] == {
        "tenant.$": "$.plan.tenant",
        "job.$": "$.plan.job",
        "first.$": "$$.Map.Item.Value.first",
        "last.$": "$$.Map.Item.Value.last",
    }
    assert join["MaxConcurrency"] == JOIN_CONCURRENCY  # bounded
    assert join.get("ToleratedFailurePercentage", 0) == 0  # a chunk not joined stops the job
    assert join["ResultPath"] is None and join["Next"] == "Decide"
    (chunk,) = join["ItemProcessor"]["States"].values()
    assert chunk["Resource"] == f"@@{by_name[wiring.BULK_JOIN][0]}@@"
    decide = states["Decide"]
    assert decide["Resource"] == f"@@{by_name[wiring.BULK_DECIDE][0]}@@"
    assert decide["Parameters"] == {"plan.$": "$.plan"} and decide["ResultPath"] == "$.plan"
    retried = {e for r in decide["Retry"] for e in r["ErrorEquals"]}
    assert {"TransientError", "Sandbox.Timedout", "States.Timeout"} <= retried and "BulkGap" not in retried
    assert not decide.get("Catch")  # a gap or a bad plan fails the execution, deciding nothing more
    # another job's calls hold the reserved concurrency: each step waits its turn (a day), first
    for task in (states["Rows"]["ItemProcessor"]["States"]["Analyse"], prepare, chunk, decide):
        waits = task["Retry"][0]
        assert waits["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
        assert waits["IntervalSeconds"] * waits["MaxAttempts"] >= 86_400 and waits["BackoffRate"] == 1
    assert decide["Next"] == "Decided"
    choice = states["Decided"]
    assert choice["Choices"] == [{"Variable": "$.plan.done", "BooleanEquals": True, "Next": "Finish"}]
    assert choice["Default"] == "Decide"  # the loop: one chunk (or less) per call
    # once decided, the job's objects (copies of templates and crops) are deleted
    finish = states["Finish"]
    assert finish["Resource"] == f"@@{by_name[wiring.BULK_DECIDE][0]}@@"
    assert finish["Parameters"] == {"finish.$": "$.plan"} and finish["Next"] == "Done"
    assert finish["Retry"][0]["ErrorEquals"] == ["Lambda.TooManyRequestsException"]
    assert states["Done"]["Type"] == "Succeed"


def test_a_job_that_never_finished_leaves_its_parts_for_a_bounded_time(template: dict[str, Any]) -> None:
    from face_dedup_infra.constructs.storage import BULK_PARTS_KEPT_DAYS

    buckets = _of(template, "AWS::S3::Bucket")
    faces = next(v for k, v in buckets.items() if k.startswith("StorageFaces"))
    rules = faces["Properties"]["LifecycleConfiguration"]["Rules"]
    parts = [r for r in rules if r.get("Prefix") == "faces/_bulk/"]
    assert len(parts) == 1 and parts[0]["Status"] == "Enabled"
    assert parts[0]["ExpirationInDays"] == BULK_PARTS_KEPT_DAYS <= 30


def _role_actions(template: dict[str, Any], name: str) -> tuple[set[str], str, dict[str, Any]]:
    _, fn = functions_by_name(template)[name]
    granted = statements(template, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    actions = _actions(granted) - {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
    spec = wiring.OPTIONAL_FUNCTIONS[name]
    needs = permissions.needs(spec)
    assert actions == {n.action for n in needs | permissions.key_needs(needs)}
    return actions, json.dumps(granted), fn["Properties"]


def test_each_step_may_touch_only_what_it_does(template: dict[str, Any]) -> None:
    buckets = _of(template, "AWS::S3::Bucket")
    faces = next(k for k in buckets if k.startswith("StorageFaces"))
    uploads = next(k for k in buckets if k.startswith("StorageUploads"))
    tables = _of(template, "AWS::DynamoDB::Table")
    # join: reads parts and the snapshot, writes pairs; nothing else (no store, index, queue)
    actions, granted, props = _role_actions(template, wiring.BULK_JOIN)
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= actions
    assert not any(a.startswith(("dynamodb:", "es:", "states:", "sqs:", "sns:")) for a in actions)
    assert "s3:DeleteObject" not in actions and faces in granted and uploads not in granted
    assert "VpcConfig" not in props and props["ReservedConcurrentExecutions"] == JOIN_CONCURRENCY
    # prepare: the manifest, the store's templates, the snapshot; reads the store only
    actions, granted, props = _role_actions(template, wiring.BULK_PREPARE)
    assert not any(a.startswith(("es:", "states:", "sqs:", "sns:")) for a in actions)
    assert {a for a in actions if a.startswith("dynamodb:")} <= {
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:GetItem",
    }
    assert "VpcConfig" not in props and props["ReservedConcurrentExecutions"] == 1
    # decide: the only one that writes the registry (store, index, queue), one at a time
    actions, granted, props = _role_actions(template, wiring.BULK_DECIDE)
    assert {"es:ESHttpPost", "sqs:SendMessage"} <= actions
    assert any(a in actions for a in ("dynamodb:TransactWriteItems", "dynamodb:PutItem"))
    # a row verifying an enrolled application drops the photo it kept, as the workflow's complete
    assert "s3:DeleteObject" in actions and not any(a.startswith(("states:", "sns:")) for a in actions)
    assert any(t in granted for t in tables)
    assert "VpcConfig" in props and props["ReservedConcurrentExecutions"] == 1
    # analysis, prepare and join: each reads and writes only the job objects it does (the
    # records' photos are denied; the analysis cannot overwrite a snapshot or the pairs)
    for name, reads, writes in (
        (wiring.BULK_ANALYSE, {"uploads:bulk/*"}, {"_bulk/*/part-*.json", "_bulk/*/vectors-*.npz"}),
        (wiring.BULK_PREPARE, {"uploads:bulk/*"}, {"_bulk/*/gallery*"}),
        (wiring.BULK_JOIN, {"_bulk/*/vectors-*.npz", "_bulk/*/gallery*"}, {"_bulk/*/candidates-*.npz"}),
    ):
        _, fn = functions_by_name(template)[name]
        role = {"Ref": fn["Properties"]["Role"]["Fn::GetAtt"][0]}
        denied = {
            statement["Action"]: _objects(statement["NotResource"], faces, uploads)
            for policy in _of(template, "AWS::IAM::Policy").values()
            if role in policy["Properties"].get("Roles", [])
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
        }
        assert denied == {"s3:GetObject": reads, "s3:PutObject": writes}, name
    for name in (wiring.BULK_ANALYSE, wiring.BULK_JOIN, wiring.BULK_PREPARE):
        _, granted, _ = _role_actions(template, name)
        assert not any(
            (a.startswith("dynamodb:") and "Write" in a) or a == "dynamodb:PutItem"
            for a in _actions(json.loads(granted))
        )


def _objects(resources: Any, faces: str, uploads: str) -> set[str]:
    """NotResource ARNs as 'uploads:<key pattern>' or '<key pattern>' of the faces bucket."""
    found = set()
    for arn in resources if isinstance(resources, list) else [resources]:
        bucket = arn["Fn::Join"][1][0]["Fn::GetAtt"][0]
        key = arn["Fn::Join"][1][1].removeprefix("/")
        assert bucket in (faces, uploads)
        found.add(key.removeprefix("faces/") if bucket == faces else f"uploads:{key}")
    return found


def test_the_job_object_names_each_step_may_write_are_the_names_it_writes() -> None:
    from fnmatch import fnmatchcase

    from face_dedup.cloud_bulk import part_key, vectors_key
    from face_dedup.cloud_bulk_decide import candidates_key, gallery_key
    from face_dedup_infra.constructs.bulk_import import JOB_OBJECTS

    def allowed(step: str, key: str) -> bool:
        return any(fnmatchcase(key, f"_bulk/*/{name}") for name in JOB_OBJECTS[step])

    written = {
        "analyse": [part_key("t1", "j1", 0), vectors_key("t1", "j1", 0, 99)],
        "prepare": [gallery_key("t1", "j1"), gallery_key("t1", "j1", 3)],
        "join": [candidates_key("t1", "j1", 4096)],
    }
    for step, keys in written.items():
        for key in keys:
            assert [s for s in written if allowed(s, key)] == [step], key


def test_the_item_processor_reads_uploads_and_writes_parts_only(template: dict[str, Any]) -> None:
    _, fn = functions_by_name(template)[wiring.BULK_ANALYSE]
    granted = statements(template, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    actions = _actions(granted) - {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
    spec = wiring.OPTIONAL_FUNCTIONS[wiring.BULK_ANALYSE]
    needs = permissions.needs(spec)
    assert actions == {n.action for n in needs | permissions.key_needs(needs)}
    assert not any(a.startswith(("dynamodb:", "es:", "states:", "sqs:", "sns:")) for a in actions)
    assert {"s3:GetObject", "s3:PutObject"} <= actions and "s3:DeleteObject" not in actions
    others = {
        k for k in _of(template, "AWS::S3::Bucket") if not k.startswith(("StorageFaces", "StorageUploads"))
    }
    assert not any(k in json.dumps(granted) for k in others)
    props = fn["Properties"]
    assert "VpcConfig" not in props  # never reaches the index
    assert props["ReservedConcurrentExecutions"] == CONCURRENCY


def test_off_unless_asked_and_unbounded_concurrency_refused() -> None:
    from face_dedup_infra.constructs.bulk_import import BulkImportOptions

    assert not BulkImportOptions.from_context({}.get).enabled
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError, match="max-concurrency"):
            BulkImportOptions(enabled=True, max_concurrency=bad)
    with pytest.raises(ValueError, match="batch-size"):
        BulkImportOptions(enabled=True, batch_size=501)
    with pytest.raises(ValueError, match="join-concurrency"):
        BulkImportOptions(enabled=True, join_concurrency=0)
