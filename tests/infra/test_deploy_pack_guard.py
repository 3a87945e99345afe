"""The cloud's pack guard (pack_guard.check_deployment): the deploy-time index step reads one
record per configured tenant and fails the deployment (CloudFormation rolls it back) when the
stack's pack is neither the active nor the shadow pack of that tenant's records, before any
index is created. The handler on moto's DynamoDB; the synthesized step's environment, input
and the master role's one added permission (cdk-nag runs on the synth)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables
from face_dedup.deployment import env_name
from face_dedup.domain import ImportItem, Outcome, Record, RecordStatus, utc_now
from face_dedup.models.registry import YUNET_SFACE, YUNET_SFACE_FLIP
from face_dedup.pack_guard import TemplatesInAnotherPack, check_deployment
from face_dedup.ports import EnrollmentCommit
from tests.infra.test_deployability import _of, statements

OLD, NEW = YUNET_SFACE.id, YUNET_SFACE_FLIP.id
NAMES = TableNames.with_prefix("guard-")


def _enroll(store: DynamoRecordStore, record_id: str, tenant: str, pack: str) -> None:
    record = Record(
        record_id, tenant, pack, None, f"/in/{record_id}.jpg", "0" * 64, RecordStatus.ENROLLED, utc_now(),
        np.full(4, 0.5, dtype=np.float32),
    )  # fmt: skip
    item = ImportItem(
        record_id, tenant, record.source, None, "0" * 64, Outcome.ENROLLED, utc_now(), record_id
    )
    store.commit(EnrollmentCommit(item, record))


@pytest.fixture
def dynamo(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoRecordStore]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_tables(client, NAMES)
        yield DynamoRecordStore(client, NAMES)


def test_a_deployment_of_another_pack_than_the_records_is_refused(dynamo: DynamoRecordStore) -> None:
    assert dynamo.sample_template_pack(tenant="default") is None
    check_deployment(dynamo, ["default"], active=NEW)  # an empty registry takes any pack
    _enroll(dynamo, "r1", "default", OLD)
    _enroll(dynamo, "r2", "other", NEW)
    assert dynamo.sample_template_pack(tenant="default") == OLD
    with pytest.raises(
        TemplatesInAnotherPack, match=f"templates are in model pack {OLD}, not {NEW}"
    ) as refused:
        check_deployment(dynamo, ["other", "default"], active=NEW)
    assert f"-c face-dedup:model-pack={OLD}" in str(refused.value)
    check_deployment(dynamo, ["default"], active=OLD)
    check_deployment(dynamo, ["default"], active=NEW, shadow=OLD)  # a rollback window: still served
    check_deployment(dynamo, ["other"], active=NEW)


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


def test_the_index_step_fails_the_deployment_before_creating_any_index(
    dynamo: DynamoRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.index_setup import handler as setup

    from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex
    from tests.infra.test_function_wiring import FakeSecurityClient

    _enroll(dynamo, "r1", "default", OLD)
    client = FakeSecurityClient()
    monkeypatch.setattr(
        setup, "build_search_index", lambda settings: OpenSearchVectorIndex(client, "faces", 128)
    )
    monkeypatch.setenv(env_name("table_records"), NAMES.records)
    monkeypatch.setenv(env_name("model_pack"), NEW)
    properties = {"ReadRoleArns": ["r"], "WriteRoleArns": ["w"], "Tenants": ["default"]}
    with pytest.raises(TemplatesInAnotherPack, match=f"model pack {OLD}"):
        setup.handler({"RequestType": "Update", "ResourceProperties": properties}, _Context())
    assert client.created == []  # nothing created for the wrong pack
    monkeypatch.setenv(env_name("model_pack"), OLD)
    assert setup.handler({"RequestType": "Update", "ResourceProperties": properties}, _Context())["Data"]
    assert client.created == ["faces"]
    with pytest.raises(ValueError):  # a tenant name from the template is validated like any input
        setup.handler(
            {"RequestType": "Update", "ResourceProperties": {**properties, "Tenants": ["../x"]}}, _Context()
        )


def test_the_synthesized_index_step_is_told_the_tenants_and_may_only_query_the_records(
    tmp_path: Path,
) -> None:
    from aws_cdk.assertions import Template

    from app import build_app

    for name in ("runtime", "models"):
        (tmp_path / "layers" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "layers" / name / "README").write_text("placeholder\n")
    context = {"face-dedup:layers-dir": str(tmp_path / "layers"), "face-dedup:tenants": "default,acme"}
    _, stack = build_app(str(tmp_path / "cdk.out"), context)  # cdk-nag fails the build on a finding
    template = dict(Template.from_stack(stack).to_json())
    (resource,) = (r for k, r in _of(template, "AWS::CloudFormation::CustomResource").items() if "Index" in k)
    assert resource["Properties"]["Tenants"] == ["default", "acme"]
    (fn,) = (
        f
        for k, f in _of(template, "AWS::Lambda::Function").items()
        if k.startswith("SearchIndexSetup") and "Provider" not in k
    )
    variables = fn["Properties"]["Environment"]["Variables"]
    assert "TablesRecords" in json.dumps(variables[env_name("table_records")])
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    granted: list[dict[str, Any]] = statements(template, role)
    dynamo_actions = {
        action
        for s in granted
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if action.startswith("dynamodb:")
    }
    assert dynamo_actions == {"dynamodb:Query"}
    (query,) = (s for s in granted if s["Action"] == "dynamodb:Query")
    assert "TablesRecords" in json.dumps(query["Resource"]) and "/index/*" in json.dumps(query["Resource"])
    # the step runs in the isolated subnets: DynamoDB is reachable through the VPC's gateway endpoint
    endpoints = json.dumps(list(_of(template, "AWS::EC2::VPCEndpoint").values()))
    assert ".dynamodb" in endpoints and fn["Properties"]["VpcConfig"]
