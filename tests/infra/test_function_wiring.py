"""Each cloud function builds only the ports it declares (face_dedup.wiring), connects to
nothing at cold start, and refuses a call it did not declare. The deploy-time index step
creates the index and maps the functions' roles; the reconcile function repairs the index."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from face_dedup import wiring
from face_dedup.adapters.opensearch_index import SECURITY_ROLES, OpenSearchVectorIndex, provision
from face_dedup.bootstrap import UndeclaredCall, build_function
from face_dedup.errors import TransientError
from face_dedup.settings import Settings


@pytest.fixture
def nowhere() -> Iterator[str]:
    """An address where nothing listens: any connection attempt fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def cloud_settings(base: Settings, url: str) -> Settings:
    return base.with_overrides(
        index_backend="opensearch",
        opensearch_url=url,
        opensearch_auth="none",
        store_backend="dynamodb",
        blob_backend="s3",
        notifier_backend="sqs",
        aws_region="eu-west-1",
        aws_endpoint_url=url,
        s3_bucket="faces",
        uploads_bucket="uploads",
        audit_archive_bucket="audit-archive",
        notification_queue_url=f"{url}/queue/cases",
        sns_topic_arn="arn:aws:sns:eu-west-1:123456789012:cases",
        state_machine_arn="arn:aws:states:eu-west-1:123456789012:stateMachine:dedup",
    )


@pytest.mark.parametrize("name", sorted([*wiring.FUNCTIONS, *wiring.OPTIONAL_FUNCTIONS]))
def test_cold_start_connects_to_nothing(
    name: str, base_settings: Settings, nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    connections: list[Any] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        connections.append(address)
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    parts = build_function(cloud_settings(base_settings, nowhere), name)  # nothing listens: must not matter
    assert connections == []
    spec = wiring.function_spec(name)
    # Undeclared ports are not built at all: a call to one is refused, never attempted.
    for port, use in (
        (wiring.INDEX, lambda: parts.service.index.count(tenant="t", model_pack="p")),
        (wiring.BLOBS, lambda: parts.service.blobs.put("k", b"", "x")),
        (wiring.STORE, lambda: parts.service.store.get_record("r")),
        (wiring.WORKFLOW, lambda: parts.workflow.start("n", {})),
    ):
        if port not in spec.uses:
            with pytest.raises(UndeclaredCall, match=f"the {name} function calls {port}"):
                use()


def test_a_declared_port_refuses_an_undeclared_method(base_settings: Settings, nowhere: str) -> None:
    parts = build_function(cloud_settings(base_settings, nowhere), "search")
    with pytest.raises(UndeclaredCall, match=r"search function calls index\.add"):
        parts.service.index.add([])  # the search step only reads the index
    with pytest.raises(UndeclaredCall, match=r"store\.commit"):
        parts.service.store.commit(None)  # type: ignore[arg-type]
    # a declared call really goes to the adapter (and fails as unreachable, as a transient error)
    with pytest.raises(TransientError):
        parts.service.index.count(tenant="t", model_pack="p")


class FakeSecurityClient:
    """Stands in for the OpenSearch client where osmem has no security plugin: records the
    deploy step's requests (named fake: no real engine is available offline)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.created: list[str] = []
        self.bodies: dict[str, Any] = {}
        self.indices = self
        self.transport = self

    def exists(self, index: str) -> bool:
        return index in self.created

    def create(self, index: str, body: Any) -> None:
        self.created.append(index)
        self.bodies[index] = body

    def get_mapping(self, index: str) -> Any:  # a later deployment's step reads the mapping
        return {index: {"mappings": self.bodies[index]["mappings"]}}

    def perform_request(self, method: str, url: str, body: Any = None) -> None:
        self.requests.append((method, url, body))

    def bulk(self, body: Any, **kwargs: Any) -> Any: ...

    def search(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any: ...

    def count(self, body: Any = None, index: Any = None, **kwargs: Any) -> Any: ...


def test_the_deploy_step_creates_the_index_once_and_maps_each_role() -> None:
    client = FakeSecurityClient()
    index = OpenSearchVectorIndex(client, "faces", 128)
    assert client.created == []  # the constructor connects to nothing
    roles = {"face_dedup_read": ["arn:search"], "face_dedup_write": ["arn:complete", "arn:api"]}
    first = provision(index, roles)
    again = provision(index, roles)
    assert (first["created"], again["created"]) == (True, False)  # idempotent across deployments
    assert client.created == ["faces"]
    mappings = {url: body for method, url, body in client.requests if "rolesmapping" in url}
    assert mappings["/_plugins/_security/api/rolesmapping/face_dedup_read"] == {
        "backend_roles": ["arn:search"]
    }
    assert mappings["/_plugins/_security/api/rolesmapping/face_dedup_write"] == {
        "backend_roles": ["arn:api", "arn:complete"]
    }
    read_role = next(b for m, u, b in client.requests if u.endswith("/roles/face_dedup_read"))
    assert read_role["index_permissions"] == [{"index_patterns": ["faces"], "allowed_actions": ["read"]}]
    assert set(SECURITY_ROLES) == {"face_dedup_read", "face_dedup_write"}


def test_index_roles_follow_the_declarations() -> None:
    in_vpc = {s.name for s in wiring.FUNCTIONS.values() if s.in_vpc}
    assert in_vpc == {"search", "complete", "reconcile", "api"}
    assert {
        s.name for s in wiring.FUNCTIONS.values() if wiring.index_role(s) == "face_dedup_read" and s.in_vpc
    } == {"search"}


def test_index_setup_handler_provisions_on_create_and_keeps_on_delete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.index_setup import handler as setup

    client = FakeSecurityClient()
    monkeypatch.setattr(
        setup, "build_search_index", lambda settings: OpenSearchVectorIndex(client, "faces", 128)
    )
    event = {"RequestType": "Create", "ResourceProperties": {"ReadRoleArns": ["r"], "WriteRoleArns": ["w"]}}
    assert setup.handler(event, _Context())["Data"] == {"Created": "True"}
    assert setup.handler({"RequestType": "Delete"}, _Context()) == {"PhysicalResourceId": "face-dedup-index"}
    assert client.created == ["faces"]


class _Context:
    function_name = "index-setup"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:index-setup"
    memory_limit_in_mb = 256
    aws_request_id = "0"
    log_group_name = "/aws/lambda/index-setup"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def test_workflow_tasks_classify_errors_for_the_state_machine() -> None:
    from functions.workflow.handler import PermanentError, classified

    def failing(error: Exception) -> Any:
        def task(event: dict[str, Any], context: Any) -> dict[str, Any]:
            raise error

        return classified(task)

    with pytest.raises(TransientError):  # retried, then left failed at its task: redrivable
        failing(TransientError("index unavailable"))({}, None)
    with pytest.raises(PermanentError, match=r"^ValueError$"):  # the failure path: only the type
        failing(ValueError("APP-123 is not staged"))({}, None)


def test_audit_entries_are_archived_write_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from functions.audit_archive import handler as archive_handler
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "FACE_DEDUP_AWS_REGION": "eu-west-1",
        "FACE_DEDUP_AUDIT_ARCHIVE_BUCKET": "audit-archive",
        "POWERTOOLS_METRICS_NAMESPACE": "FaceDedupTest",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(
            Bucket="audit-archive",
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
            ObjectLockEnabledForBucket=True,
        )
        s3.put_object_lock_configuration(
            Bucket="audit-archive",
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}},
            },
        )
        archive_handler.archive.cache_clear()
        image = {
            "tenant": {"S": "north"},
            "event": {"S": "2026-12-01T10:00:00Z#abc"},
            "action": {"S": "record.erased"},
            "actor": {"S": "officer-1"},
        }
        event = {
            "Records": [
                {
                    "eventID": "1",
                    "eventName": "INSERT",
                    "dynamodb": {"NewImage": image, "SequenceNumber": "1"},
                },
                {
                    "eventID": "2",
                    "eventName": "MODIFY",
                    "dynamodb": {"NewImage": image, "SequenceNumber": "2"},
                },
            ]
        }
        assert archive_handler.handler(event, _Context()) == {"batchItemFailures": []}
        (stored,) = s3.list_object_versions(Bucket="audit-archive", Prefix="audit/")["Versions"]
        assert stored["Key"] == "audit/north/2026-12-01T10-00-00Z_abc.json"
        body = json.loads(s3.get_object(Bucket="audit-archive", Key=stored["Key"])["Body"].read())
        assert body["action"] == "record.erased"
        head = s3.head_object(Bucket="audit-archive", Key=stored["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"  # nobody can delete or rewrite it before then
        with pytest.raises(s3.exceptions.ClientError):
            s3.delete_object(Bucket="audit-archive", Key=stored["Key"], VersionId=stored["VersionId"])
        archive_handler.archive.cache_clear()


def test_every_declared_function_has_a_handler_and_a_sample_event() -> None:
    import importlib
    from pathlib import Path

    from functions.invoke import HANDLERS

    root = Path(__file__).resolve().parents[2]
    for spec in [*wiring.FUNCTIONS.values(), *wiring.OPTIONAL_FUNCTIONS.values()]:  # abis too
        module, attribute = spec.handler.split(".")
        handler = getattr(importlib.import_module(f"functions.{spec.code_dir}.{module}"), attribute)
        assert callable(handler)
        assert any(
            target == (f"functions.{spec.code_dir}.{module}", attribute) for target in HANDLERS.values()
        )
        folder = "workflow" if spec.code_dir == "workflow" else spec.code_dir
        assert list((root / "events" / folder).glob("*.json")), spec.name
