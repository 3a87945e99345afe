"""The whole cloud bulk job on moto (S3, DynamoDB, SQS) and osmem (the k-NN query answered by
the named FakeKnnOpenSearch): each Lambda handler of functions/bulk, built from its own
declaration (an undeclared port call fails), driven as the state machine drives it (the
rows map's items, prepare, the join map's chunks, the decide loop). A first job fills the
registry; a second one finds its duplicates against those faces, inside itself, opens cases
and queues their notifications, and a re-run of its decide loop registers nothing again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables
from face_dedup.errors import Reason
from face_dedup.models.registry import get_pack
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from face_dedup.usecases.inputs import content_digest
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, at_score, unit

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

REGION = "eu-west-1"
TENANT = "t1"


class FakeContext:
    function_name = "face-dedup-bulk"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:face-dedup-bulk"
    memory_limit_in_mb = 1769
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/face-dedup-bulk"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


CONTEXT = cast("LambdaContext", FakeContext())


@pytest.fixture
def cloud(
    monkeypatch: pytest.MonkeyPatch, base_settings: Settings, tmp_path: Path, osmem_clone: Any
) -> Iterator[dict[str, Any]]:
    from face_dedup import bootstrap
    from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_UPLOADS_BUCKET": "uploads",
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_DYNAMODB_TABLE_PREFIX": "fd-",
        "FACE_DEDUP_INDEX_BACKEND": "opensearch",
        "FACE_DEDUP_OPENSEARCH_URL": osmem_clone.url,
        "FACE_DEDUP_OPENSEARCH_AUTH": "none",
        "FACE_DEDUP_NOTIFIER_BACKEND": "sqs",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        bootstrap, "_opensearch_client", lambda s: FakeKnnOpenSearch(hosts=[s.opensearch_url])
    )
    fake = FakeFaceAnalyzer(get_pack(base_settings.model_pack))
    monkeypatch.setattr(bootstrap, "build_engine", lambda settings, pack, **kw: fake)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("faces", "uploads"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_tables(dynamodb, TableNames.with_prefix("fd-"))
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="cases")["QueueUrl"]
        monkeypatch.setenv("FACE_DEDUP_NOTIFICATION_QUEUE_URL", queue)
        bootstrap.build_search_index(Settings.load()).ensure_index()  # the deployment's step
        from functions.bulk import handler

        handler._parts.cache_clear()
        handler._step.cache_clear()
        yield {
            "s3": s3,
            "sqs": sqs,
            "queue": queue,
            "fake": fake,
            "handler": handler,
            "store": DynamoRecordStore(dynamodb, TableNames.with_prefix("fd-")),
        }
        handler._parts.cache_clear()
        handler._step.cache_clear()


def _run_job(cloud: dict[str, Any], batch: str, rows: list[tuple[str, bytes | None]]) -> list[dict[str, Any]]:
    """Upload the batch, then run every step as the state machine would; returns the plans."""
    s3, handler = cloud["s3"], cloud["handler"]
    manifest = "file,application_id\n" + "".join(f"{name},\n" for name, _ in rows)
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/{batch}/manifest.csv", Body=manifest.encode())
    for name, data in rows:
        if data is not None:
            s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/{batch}/{name}", Body=data)
    job = f"job-{batch}"
    items = [{"row": n, "file": name, "application_id": ""} for n, (name, _) in enumerate(rows)]
    for first in range(0, len(items), 2):  # the rows map: batches of 2
        event = {
            "Items": items[first : first + 2],
            "BatchInput": {"tenant": TENANT, "batch": batch, "job": job},
        }
        handler.handler(event, CONTEXT)
    plan = handler.prepare({"tenant": TENANT, "batch": batch, "job": job}, CONTEXT)
    assert plan["total"] == len(rows)
    for chunk in plan["chunks"]:  # the join map
        handler.join({"tenant": TENANT, "job": job, "first": chunk["first"], "last": chunk["last"]}, CONTEXT)
    plans = []
    while not plan.get("done"):  # the decide loop
        plan = handler.decide({"plan": plan}, CONTEXT)
        plans.append(plan)
    return plans


def _item(cloud: dict[str, Any], batch: str, name: str, data: bytes) -> Any:
    from face_dedup import wiring

    service = cloud["handler"]._step(wiring.BULK_DECIDE).service.for_tenant(TENANT)
    key = service.idempotency_key(InputRef(f"bulk/{TENANT}/{batch}/{name}", None), content_digest(data))
    return cloud["store"].get_import_item(key)


def test_the_bulk_job_on_aws_adapters_enrols_links_and_resumes(cloud: dict[str, Any]) -> None:
    fake: FakeFaceAnalyzer = cloud["fake"]
    dim = fake.dim
    a, b = fake.face(b"ann", unit(dim, 1)), fake.face(b"bob", unit(dim, 2))
    first = _run_job(cloud, "b1", [("ann.jpg", a), ("bob.jpg", b)])
    assert first[-1]["indexed"] == 2 and first[-1]["gallery"] == 0
    assert _item(cloud, "b1", "ann.jpg", a).outcome.value == "enrolled"

    ann2 = fake.face(b"ann again", at_score(unit(dim, 1), 0.97, 5))  # against the existing faces
    cat = fake.face(b"cat", unit(dim, 3))
    cat2 = fake.face(b"cat again", at_score(unit(dim, 3), 0.97, 6))  # inside the job
    wall = fake.reject(b"wall", Reason.NO_FACE, "no face found")
    rows = [
        ("ann2.jpg", ann2),
        ("cat.jpg", cat),
        ("x/../y.jpg", None),
        ("cat2.jpg", cat2),
        ("wall.jpg", wall),
    ]
    plans = _run_job(cloud, "b2", rows)
    last = plans[-1]
    assert last["gallery"] == 2 and last["next"] == 5 and last["done"]
    calls = last["last_call"]
    assert calls["answered"] == 3 and calls["fallbacks"] == 0  # every search from the join's pairs
    assert calls["reasons"] == {Reason.NOT_A_FILE.value: 1, Reason.NO_FACE.value: 1}
    ann_record = _item(cloud, "b1", "ann.jpg", a).record_id
    linked = _item(cloud, "b2", "ann2.jpg", ann2)
    assert linked.outcome.value in ("duplicate", "review") and linked.case_id
    assert [c.record_id for c in linked.candidates] == [ann_record]
    cat_record = _item(cloud, "b2", "cat.jpg", cat).record_id
    assert [c.record_id for c in _item(cloud, "b2", "cat2.jpg", cat2).candidates] == [cat_record]
    assert _item(cloud, "b2", "wall.jpg", wall).reason == Reason.NO_FACE.value
    messages = (
        cloud["sqs"].receive_message(QueueUrl=cloud["queue"], MaxNumberOfMessages=10).get("Messages", [])
    )
    assert len(messages) == 2  # one notification per case opened
    # the kept photo is the analysed one (the decide step re-read it, within the limit)
    kept = cloud["s3"].list_objects_v2(Bucket="faces", Prefix=f"faces/{TENANT}/{cat_record}/")["Contents"]
    assert len(kept) == 2

    # the loop run again from the start (a redriven execution): nothing registered twice
    again = cloud["handler"].decide({"plan": plans[0] | {"next": 0, "indexed": 0, "done": False}}, CONTEXT)
    assert again["done"] and again["indexed"] == last["indexed"] == 3
    records = list(cloud["store"].iter_templates(tenant=TENANT))
    assert len(records) == 5  # ann, bob, ann2, cat, cat2
