"""The serverless flow end to end on emulated AWS, offline, without Docker.

moto emulates S3 (with its event notifications to SQS), SQS, DynamoDB, SNS and Step Functions,
and executes the state machine definition that the CDK app synthesizes. Its Lambda tasks are
routed in-process to the real workflow handlers; the real ingest handler drains the queue.
The k-NN index is osmem-server with the k-NN query answered by `FakeKnnOpenSearch` (named
fake: osmem has no k-NN engine).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from face_dedup.adapters.dynamodb_store import TableNames, create_tables
from face_dedup.deployment import CLOUD_SETTINGS, PREFIX, env_name, environment
from face_dedup.settings import Settings
from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

pytestmark = pytest.mark.shared_data

REGION = "eu-west-1"
A1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
A2 = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
B1 = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"
TASKS = {"Search": "search", "Complete": "complete", "Notify": "notify", "RecordFailure": "record_failure"}


class FakeContext:
    """What Powertools reads from a Lambda context."""

    function_name = "face-dedup-test"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:face-dedup-test"
    memory_limit_in_mb = 1024
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/face-dedup-test"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def synthesized_definition(layers: Path, tmp_path: Path) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The state machine's ASL from the CDK app, and the logical ids of its task functions."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
    from aws_cdk.assertions import Template

    from app import build_app

    _, stack = build_app(str(tmp_path / "cdk.out"), {"face-dedup:layers-dir": str(layers)})
    template = Template.from_stack(stack)
    machine = next(iter(template.find_resources("AWS::StepFunctions::StateMachine").values()))
    logical = {
        name: stack.get_logical_id(getattr(stack.functions, attr).node.default_child)
        for name, attr in (
            ("Search", "search"),
            ("Complete", "complete"),
            ("Notify", "notify"),
            ("RecordFailure", "record_failure"),
        )
    }
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.dumps(parts), logical, dict(template.to_json())


def resolve_definition(parts_json: str, logical: dict[str, str], arns: dict[str, str]) -> str:
    """Fn::Join parts with Fn::GetAtt/Ref of the functions -> ASL text naming moto's functions."""
    by_logical = {logical_id: arns[name] for name, logical_id in logical.items()}
    text = []
    for part in json.loads(parts_json):
        if isinstance(part, str):
            text.append(part)
        elif "Fn::GetAtt" in part:
            text.append(by_logical[part["Fn::GetAtt"][0]])
        elif "Ref" in part and part["Ref"] == "AWS::Partition":
            text.append("aws")
        else:
            raise AssertionError(f"unexpected token in the definition: {part}")
    return "".join(text)


@pytest.fixture
def layers(tmp_path: Path) -> Path:
    for name in ("runtime", "models"):
        (tmp_path / "layers" / name).mkdir(parents=True)
        (tmp_path / "layers" / name / "README").write_text("placeholder\n")
    return tmp_path / "layers"


@pytest.fixture
def cloud(
    request: pytest.FixtureRequest,
    base_settings: Settings,
    osmem_clone: Any,
    layers: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """`request.param` (indirect): the index method, as the CDK app sets it for the registry
    size (hnsw by default; exact above 100k faces: script_score with knn_score)."""
    parts_json, logical, template = synthesized_definition(layers, tmp_path)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        # The deployment's own settings (the stack gives every function the same), then what
        # only the emulation changes: folders on this machine, moto's names, osmem's URL.
        **environment(
            {
                **CLOUD_SETTINGS,  # opensearch, dynamodb, s3, sqs (queued for the digest function)
                "models_dir": str(base_settings.models_dir),
                "data_dir": str(tmp_path / "scratch"),
                "aws_region": REGION,
                "s3_bucket": "faces",
                "uploads_bucket": "uploads",
                "dynamodb_table_prefix": "fd-",
                "opensearch_url": osmem_clone.url,
                "opensearch_auth": "none",
                "opensearch_method": getattr(request, "param", "hnsw"),
            }
        ),
        "POWERTOOLS_METRICS_NAMESPACE": "FaceDedupTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The only stand-in: osmem has no k-NN engine, so its k-NN query is answered by the fake.
    flaky: dict[str, Any] = {"failures_left": 0, "broken": False, "queries": []}

    def fake_client(settings: Settings) -> FakeKnnOpenSearch:
        client = FakeKnnOpenSearch(hosts=[settings.opensearch_url])
        original = client.search

        def search(*args: Any, **kwargs: Any) -> Any:
            flaky["queries"].extend(kwargs.get("body", {}).get("query", {}).keys() & {"knn", "script_score"})
            if flaky["broken"] and "knn" in json.dumps(kwargs.get("body", {})):
                raise RuntimeError("the index rejected the query (injected bug)")
            if flaky["failures_left"] > 0 and "knn" in json.dumps(kwargs.get("body", {})):
                flaky["failures_left"] -= 1
                from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError

                raise OpenSearchConnectionError("N/A", "index unavailable (injected)", None)
            return original(*args, **kwargs)

        client.search = search  # type: ignore[method-assign]
        return client

    monkeypatch.setattr("face_dedup.bootstrap._opensearch_client", fake_client)
    # The deployment's index step (the stack's custom resource): no function creates the index.
    from face_dedup.bootstrap import _opensearch_index

    _opensearch_index(Settings.load()).ensure_index()

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        for bucket in ("uploads", "faces"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="faces", VersioningConfiguration={"Status": "Enabled"})
        create_tables(boto3.client("dynamodb", region_name=REGION), TableNames.with_prefix("fd-"))
        topic = sns.create_topic(Name="cases")["TopicArn"]
        officers = sqs.create_queue(QueueName="officers")["QueueUrl"]
        officers_arn = sqs.get_queue_attributes(QueueUrl=officers, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=officers_arn, Attributes={"RawMessageDelivery": "true"}
        )
        ingest_queue = sqs.create_queue(QueueName="ingest")["QueueUrl"]
        notifications_queue = sqs.create_queue(QueueName="case-notifications")["QueueUrl"]
        monkeypatch.setenv(env_name("notification_queue_url"), notifications_queue)
        ingest_arn = sqs.get_queue_attributes(QueueUrl=ingest_queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket="uploads",
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": ingest_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                    }
                    for prefix in ("selfies/", "imports/")
                ]
            },
        )
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="workflow", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        package = io.BytesIO()
        with zipfile.ZipFile(package, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
        lam = boto3.client("lambda", region_name=REGION)
        arns = {
            name: lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="handler.handler",
                Code={"ZipFile": package.getvalue()},
            )["FunctionArn"]
            for name in TASKS
        }
        machine = sfn.create_state_machine(
            name="dedup", definition=resolve_definition(parts_json, logical, arns), roleArn=role
        )["stateMachineArn"]
        monkeypatch.setenv(env_name("sns_topic_arn"), topic)
        monkeypatch.setenv(env_name("state_machine_arn"), machine)

        ingest_module = importlib.import_module("functions.ingest.handler")
        workflow_module = importlib.import_module("functions.workflow.handler")
        digest_module = importlib.import_module("functions.digest.handler")
        reconcile_module = importlib.import_module("functions.reconcile.handler")
        reconcile_module._service.cache_clear()
        ingest_module.ingestor.cache_clear()
        workflow_module._service.cache_clear()
        digest_module._sns.cache_clear()
        calls = record_calls(monkeypatch, template, workflow_module, digest_module, reconcile_module)

        def invoke(
            self: Any,
            function_name: str,
            qualifier: Any,
            body: Any,
            headers: Any,
            response_headers: dict[str, str],
        ) -> bytes:
            name = function_name.rsplit(":", 1)[-1]
            try:
                result = getattr(workflow_module, TASKS[name])(json.loads(body), FakeContext())
            except Exception as exc:  # as Lambda reports an unhandled error
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
            return json.dumps(result).encode()

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)

        def inspect() -> Any:
            # The test's own view of the registry (every port): the functions' services are
            # built from their declarations and refuse calls they do not declare.
            from face_dedup.bootstrap import build_service

            return build_service(Settings.load(), with_engine=False, reconcile=False)[0]

        yield {
            "inspect": inspect,
            "s3": s3,
            "sqs": sqs,
            "sfn": sfn,
            "machine": machine,
            "ingest_queue": ingest_queue,
            "officers": officers,
            "ingest": ingest_module,
            "flaky": flaky,
            "notifications": notifications_queue,
            "digest": digest_module,
            "reconcile": reconcile_module,
        }
        ingest_module.ingestor.cache_clear()
        workflow_module._service.cache_clear()
        # Every AWS call the real handlers made is one their own role in the template allows.
        assert {function for function, _, _ in calls} >= {"ingest", "search"}
        from tests.infra.test_deployability import not_allowed

        assert not_allowed(template, calls) == []


# Settings only the emulation needs (moto's names and endpoints, scratch and model folders here).
EMULATION_ONLY = {env_name(s) for s in ("dynamodb_table_prefix", "models_dir", "data_dir")}


def record_calls(
    monkeypatch: pytest.MonkeyPatch, template: dict[str, Any], *handler_modules: Any
) -> set[tuple[str, str, str]]:
    """(function, service, operation) of every AWS call made by clients that a function's own
    bootstrap built (the test's own clients are not counted). Each function is built from the
    FACE_DEDUP_* settings its environment in the template has, and no others: a setting its
    code reads but the stack does not give it fails here."""
    from botocore import xform_name

    import face_dedup.bootstrap as bootstrap
    from tests.infra.test_deployability import functions_by_name

    calls: set[tuple[str, str, str]] = set()
    building: list[str] = []
    real_build, real_client = bootstrap.build_function, bootstrap.client_for

    given = {
        name: set(fn["Properties"]["Environment"]["Variables"])
        for name, (_, fn) in functions_by_name(template).items()
    }

    def build_function(settings: Settings, name: str) -> Any:
        building.append(name)
        own = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(PREFIX) or k in given[name] or k in EMULATION_ONLY
        }
        try:
            return real_build(Settings.load(own), name)
        finally:
            building.pop()

    def client_for(settings: Settings, service: str) -> Any:
        client = real_client(settings, service)
        if building:

            def record(model: Any, who: str = building[-1], **_: Any) -> None:
                calls.add((who, model.service_model.service_name, xform_name(model.name)))

            client.meta.events.register("before-call", record)
        return client

    monkeypatch.setattr(bootstrap, "client_for", client_for)
    monkeypatch.setattr(bootstrap, "build_function", build_function)
    for module in handler_modules:
        monkeypatch.setattr(module, "build_function", build_function)
    return calls


def drain(cloud: dict[str, Any]) -> list[dict[str, Any]]:
    """Deliver the queued S3 events to the real ingest handler, as the SQS event source does."""
    bodies: list[dict[str, Any]] = []
    while True:
        messages = cloud["sqs"].receive_message(QueueUrl=cloud["ingest_queue"], MaxNumberOfMessages=10)
        batch = messages.get("Messages", [])
        if not batch:
            return bodies
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:ingest",
                    "awsRegion": REGION,
                }
                for m in batch
            ]
        }
        response = cloud["ingest"].handler(event, FakeContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        assert not failed, f"ingest failed for {failed}"
        for message in batch:
            cloud["sqs"].delete_message(
                QueueUrl=cloud["ingest_queue"], ReceiptHandle=message["ReceiptHandle"]
            )
            bodies.append(json.loads(message["Body"]))


def deliver_notifications(cloud: dict[str, Any]) -> dict[str, Any]:
    """One period's case notifications through the real digest handler, as SQS batches them."""
    messages = (
        cloud["sqs"]
        .receive_message(QueueUrl=cloud["notifications"], MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }
    result: dict[str, Any] = cloud["digest"].handler(event, FakeContext())
    for message in messages:
        cloud["sqs"].delete_message(QueueUrl=cloud["notifications"], ReceiptHandle=message["ReceiptHandle"])
    return result


def wait_for_executions(cloud: dict[str, Any], expected: int, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executions: list[dict[str, Any]] = cloud["sfn"].list_executions(stateMachineArn=cloud["machine"])[
            "executions"
        ]
        if len(executions) >= expected and all(e["status"] != "RUNNING" for e in executions):
            return executions
        time.sleep(0.2)
    raise AssertionError("executions did not finish")


def upload(cloud: dict[str, Any], key: str, data: bytes) -> None:
    cloud["s3"].put_object(Bucket="uploads", Key=key, Body=data)


def _json_objects(line: str) -> list[dict[str, Any]]:
    """Every JSON object on a line of captured output. Functions run on several threads here and
    print() writes a line and its newline separately, so two EMF records can share one line."""
    decoder, found, at = json.JSONDecoder(), [], line.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(line, at)
        except json.JSONDecodeError:
            at = line.find("{", at + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        at = line.find("{", end)
    return found


@pytest.mark.parametrize("cloud", ["hnsw", "exact"], indirect=True)
def test_uploads_to_decisions_on_emulated_aws(
    cloud: dict[str, Any], faces_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    upload(
        cloud,
        "imports/tenant-a/batch 1/manifest.csv",
        b"file,application_id\nscan-001.jpg,APP-001\nscan-002.jpg,APP-002\nscan-003.jpg,APP-003\n",
    )
    upload(cloud, "imports/tenant-a/batch 1/scan-001.jpg", (faces_root / A1).read_bytes())
    upload(cloud, "imports/tenant-a/batch 1/scan-002.jpg", (faces_root / B1).read_bytes())
    upload(cloud, "imports/tenant-a/batch 1/scan-003.jpg", (faces_root / A1).read_bytes()[:700])  # poison
    drain(cloud)
    first = wait_for_executions(cloud, 2)
    assert all(e["status"] == "SUCCEEDED" for e in first)
    # The same person applies again through the mobile channel (key with a space: URL-encoded).
    upload(cloud, "selfies/tenant-a/APP-777/my selfie.jpg", (faces_root / A2).read_bytes())
    delivered = drain(cloud)
    executions = wait_for_executions(cloud, 3)
    assert all(e["status"] == "SUCCEEDED" for e in executions)

    store = cloud["inspect"]().for_tenant("tenant-a").store
    counts = store.outcome_counts(tenant="tenant-a")
    assert counts["enrolled"] == 2 and counts["rejected"] == 1
    assert counts.get("review", 0) + counts.get("duplicate", 0) == 1
    cases = store.list_cases(tenant="tenant-a")
    assert len(cases) == 1
    (case,) = cases
    probe = store.get_record(case.probe_record_id)
    assert probe is not None and probe.application_id == "APP-777" and probe.source.endswith("my selfie.jpg")
    candidate = store.get_record(case.candidates[0].record_id)
    assert candidate is not None and candidate.application_id == "APP-001"
    rejected = [e for e in store.audit_events(tenant="tenant-a") if e.action == "import.rejected"]
    assert len(rejected) == 1 and rejected[0].details["reason"] == "UNDECODABLE"
    # Drift in the cloud: each decision, by the function that made it (ingest's rejection,
    # complete's enrollments and case), wrote one EMF line of tenant-a's metrics to its log.
    emitted: dict[str, float] = {}
    for line in capfd.readouterr().out.splitlines():
        if line.startswith("{") and '"FaceDedup/Drift"' in line:
            assert "APP-" not in line
        for record in _json_objects(line):
            if "FaceDedup/Drift" not in json.dumps(record.get("_aws", {})):
                continue
            assert record["tenant"] == "tenant-a"
            for name in [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]:
                if name.startswith("outcome_"):
                    values = record[name] if isinstance(record[name], list) else [record[name]]
                    emitted[name] = emitted.get(name, 0) + sum(values)
    assert emitted.get("outcome_enrolled") == 2 and emitted.get("outcome_rejected") == 1
    assert emitted.get("outcome_review", 0) + emitted.get("outcome_duplicate", 0) == 1

    assert deliver_notifications(cloud) == {"notifications": 1, "messages": 1}
    notes = (
        cloud["sqs"].receive_message(QueueUrl=cloud["officers"], MaxNumberOfMessages=10).get("Messages", [])
    )
    assert len(notes) == 1
    note = json.loads(notes[0]["Body"])
    assert note["case_id"] == case.case_id and set(note) == {"kind", "tenant", "case_id", "link", "case_ids"}

    # The same S3 event delivered three more times changes nothing.
    before = (
        store.outcome_counts(tenant="tenant-a"),
        len(store.list_cases(tenant="tenant-a")),
        len(cloud["sfn"].list_executions(stateMachineArn=cloud["machine"])["executions"]),
    )
    for _ in range(3):
        cloud["sqs"].send_message(QueueUrl=cloud["ingest_queue"], MessageBody=json.dumps(delivered[0]))
        drain(cloud)
    after = (
        store.outcome_counts(tenant="tenant-a"),
        len(store.list_cases(tenant="tenant-a")),
        len(cloud["sfn"].list_executions(stateMachineArn=cloud["machine"])["executions"]),
    )
    assert after == before
    # The functions searched the index the way the deployment's method says (issue 15).
    method = os.environ[env_name("opensearch_method")]
    assert set(cloud["flaky"]["queries"]) == {"script_score" if method == "exact" else "knn"}


def test_selfie_for_an_enrolled_application_is_verified(cloud: dict[str, Any], faces_root: Path) -> None:
    upload(cloud, "imports/tenant-d/b1/manifest.csv", b"file,application_id\nscan-1.jpg,APP-9\n")
    upload(cloud, "imports/tenant-d/b1/scan-1.jpg", (faces_root / A1).read_bytes())
    drain(cloud)
    wait_for_executions(cloud, 1)
    upload(cloud, "selfies/tenant-d/APP-9/selfie.jpg", (faces_root / A2).read_bytes())
    drain(cloud)
    executions = wait_for_executions(cloud, 2)
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    store = cloud["inspect"]().store
    assert store.outcome_counts(tenant="tenant-d") == {"enrolled": 1, "verified": 1}
    assert store.list_cases(tenant="tenant-d") == []


def test_transient_index_failure_is_retried_and_ends_enrolled(
    cloud: dict[str, Any], faces_root: Path
) -> None:
    cloud["flaky"]["failures_left"] = 2  # the first two k-NN searches find the index unavailable
    upload(cloud, "selfies/tenant-b/APP-1/selfie.jpg", (faces_root / B1).read_bytes())
    drain(cloud)
    (execution,) = wait_for_executions(cloud, 1, timeout=120)
    assert execution["status"] == "SUCCEEDED"
    assert cloud["flaky"]["failures_left"] == 0
    history = cloud["sfn"].get_execution_history(executionArn=execution["executionArn"])["events"]
    assert sum(1 for e in history if e["type"] == "TaskFailed") == 2  # two failed attempts, then success
    store = cloud["inspect"]().for_tenant("tenant-b").store
    assert store.outcome_counts(tenant="tenant-b") == {"enrolled": 1}


def test_a_failing_workflow_records_the_reason_and_loses_nothing(
    cloud: dict[str, Any], faces_root: Path
) -> None:
    cloud["flaky"]["broken"] = True  # not a transient error: no retry, straight to the failure path
    upload(cloud, "selfies/tenant-c/APP-5/selfie.jpg", (faces_root / A1).read_bytes())
    drain(cloud)
    (execution,) = wait_for_executions(cloud, 1)
    assert execution["status"] == "FAILED"
    service = cloud["inspect"]().for_tenant("tenant-c")
    assert service.store.outcome_counts(tenant="tenant-c") == {"rejected": 1}
    (failed,) = [e for e in service.store.audit_events(tenant="tenant-c") if e.action == "import.failed"]
    assert failed.details["error"] == "RuntimeError"
    assert service.blobs.keys("tenant-c/") == []  # the failed input's photos do not linger


EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_sample_events_through_the_ingest_handler(cloud: dict[str, Any], faces_root: Path) -> None:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    heic = io.BytesIO()
    Image.open(faces_root / A1).save(heic, "HEIF", quality=90)
    # The sample's key is URL-encoded (spaces as '+'); the object is stored under the real name.
    upload(cloud, "selfies/tenant-a/APP-2026-0042/selfie 27 Nov.heic", heic.getvalue())
    drain(cloud)  # the real notification of that upload
    selfie = json.loads((EVENTS / "ingest" / "selfie-s3-via-sqs.json").read_text())
    assert cloud["ingest"].handler(selfie, FakeContext()) == {"batchItemFailures": []}  # a redelivery: no-op
    (execution,) = wait_for_executions(cloud, 1)
    assert execution["status"] == "SUCCEEDED"
    store = cloud["inspect"]().store
    assert store.outcome_counts(tenant="tenant-a") == {"enrolled": 1}

    bad_batch = json.loads((EVENTS / "ingest" / "batch-with-one-bad-record.json").read_text())
    response = cloud["ingest"].handler(bad_batch, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": bad_batch["Records"][1]["messageId"]}]}

    test_event = json.loads((EVENTS / "ingest" / "s3-test-event-via-sqs.json").read_text())
    assert cloud["ingest"].handler(test_event, FakeContext()) == {"batchItemFailures": []}
    assert len(cloud["sfn"].list_executions(stateMachineArn=cloud["machine"])["executions"]) == 1


def test_the_nightly_reconcile_repairs_the_index(cloud: dict[str, Any], faces_root: Path) -> None:
    upload(cloud, "selfies/tenant-r/APP-1/a.jpg", (faces_root / A1).read_bytes())
    drain(cloud)
    assert wait_for_executions(cloud, 1)[0]["status"] == "SUCCEEDED"
    service = cloud["inspect"]().for_tenant("tenant-r")
    (record_id,) = service.index.record_ids(tenant="tenant-r", model_pack=service.model_pack)
    assert service.index.delete([record_id]) == 1  # an interrupted write: a record without its entry
    event = {"tenants": ["tenant-r"]}
    assert cloud["reconcile"].handler(event, FakeContext()) == {
        "tenants": {"tenant-r": {"added": 1, "removed": 0}}
    }
    assert service.index.record_ids(tenant="tenant-r", model_pack=service.model_pack) == {record_id}
    assert cloud["reconcile"].handler(event, FakeContext()) == {
        "tenants": {"tenant-r": {"added": 0, "removed": 0}}
    }
