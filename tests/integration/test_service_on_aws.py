"""The same de-duplication service on the AWS adapters: S3, DynamoDB and SNS emulated by moto
(in-process), OpenSearch by osmem-server with the k-NN query answered by `FakeKnnOpenSearch`.
Swapping adapters is configuration: this runs the service code the embedded tests run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import TableNames, create_tables
from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex
from face_dedup.bootstrap import build_adapters, build_engine, load_tail
from face_dedup.domain import Outcome
from face_dedup.models.registry import get_pack
from face_dedup.service import DedupService, InputRef, ServiceConfig
from face_dedup.settings import Settings
from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

pytestmark = pytest.mark.shared_data

A1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
A2 = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
B1 = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"
REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="faces", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="faces", VersioningConfiguration={"Status": "Enabled"})
        create_tables(boto3.client("dynamodb", region_name=REGION), TableNames.with_prefix("fd-"))
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic = sns.create_topic(Name="cases")["TopicArn"]
        queue = sqs.create_queue(QueueName="officers")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        yield {"s3": s3, "sqs": sqs, "topic": topic, "queue": queue}


@pytest.fixture
def aws_service(aws: dict[str, Any], base_settings: Settings, osmem_clone: Any) -> Iterator[DedupService]:
    settings = base_settings.with_overrides(
        store_backend="dynamodb",
        blob_backend="s3",
        notifier_backend="sns",
        aws_region=REGION,
        s3_bucket="faces",
        dynamodb_table_prefix="fd-",
        sns_topic_arn=aws["topic"],
        backup_retention="dynamodb-point-in-time-recovery=35,opensearch-automated-snapshots=14",
    )
    adapters = build_adapters(settings)
    pack = get_pack(settings.model_pack)
    index = OpenSearchVectorIndex(
        FakeKnnOpenSearch(hosts=[osmem_clone.url]), "faces", pack.contract.embedding_dim
    )
    index.ensure_index()  # the deployment's index-setup step
    adapters.index = index
    service = DedupService(
        ServiceConfig.from_settings(settings, load_tail(settings, pack)),
        build_engine(settings, pack),
        adapters.index,
        adapters.store,
        adapters.blobs,
        adapters.notifier,
        settings=settings,
    )
    yield service


def test_dedup_on_aws_adapters(aws_service: DedupService, aws: dict[str, Any], faces_root: Path) -> None:
    def enroll(name: str, application: str):  # type: ignore[no-untyped-def]
        return aws_service.enroll((faces_root / name).read_bytes(), InputRef(name, application))

    first = enroll(A1, "APP-1")
    other = enroll(B1, "APP-2")
    second = enroll(A2, "APP-3")
    assert (first.outcome, other.outcome) == (Outcome.ENROLLED, Outcome.ENROLLED)
    assert second.outcome in (Outcome.REVIEW, Outcome.DUPLICATE)
    assert second.candidates[0].record_id == first.record_id
    assert enroll(A2, "APP-3") == second  # a repeated event changes nothing
    assert aws_service.gallery_size() == 3

    messages = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["case_id"] == second.case_id and set(body) == {
        "kind",
        "tenant",
        "case_id",
        "link",
        "case_ids",
    }

    record_id = first.record_id or ""
    assert aws_service.blobs.keys(f"{aws_service.tenant}/{record_id}/")
    receipt = aws_service.erase(record_id, "dpo", "request 9")
    assert receipt["vectors"] == 1 and receipt["blobs"] == 2
    # The backups that still hold the record, each until its window ends after the erasure.
    (erased,) = [
        e for e in aws_service.store.audit_events(tenant=aws_service.tenant) if e.action == "record.erased"
    ]
    at = datetime.fromisoformat(erased.at)
    assert (
        receipt["backups"]
        == erased.details["backups"]
        == [
            {
                "backup": "dynamodb-point-in-time-recovery",
                "until": (at + timedelta(days=35)).isoformat(timespec="seconds"),
            },
            {
                "backup": "opensearch-automated-snapshots",
                "until": (at + timedelta(days=14)).isoformat(timespec="seconds"),
            },
        ]
    )
    versions = aws["s3"].list_object_versions(
        Bucket="faces", Prefix=f"faces/{aws_service.tenant}/{record_id}/"
    )
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")  # no old version survives
    assert aws_service.store.get_record(record_id) is None
    assert record_id not in {
        c.record_id for c in aws_service.search((faces_root / A1).read_bytes(), 5).candidates
    }
    assert [e.action for e in aws_service.store.audit_events(tenant=aws_service.tenant)].count(
        "record.erased"
    ) == 1
