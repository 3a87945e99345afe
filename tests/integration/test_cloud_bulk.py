"""The bulk de-duplication job's item processor (functions/bulk, face_dedup.cloud_bulk) on moto
(S3): items shaped as the Distributed Map hands them (manifest rows with their index, the batch
input), photos in the uploads bucket, the analysed part written to the faces bucket. moto cannot
run a Distributed Map: its shape is checked on the synthesized ASL
(tests/infra/test_bulk_import_job.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import numpy as np
import pytest
from moto import mock_aws

from face_dedup.adapters.s3_blobs import S3BlobStore
from face_dedup.cloud_bulk import BadItem, analyse_rows, load_parts, part_key, template_of
from face_dedup.errors import Reason
from face_dedup.models.registry import get_pack
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from face_dedup.usecases.inputs import content_digest
from face_dedup.vision.pipeline import Rejection
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, unit

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

REGION = "eu-west-1"


class FakeContext:
    function_name = "face-dedup-bulk_analyse"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:face-dedup-bulk_analyse"
    memory_limit_in_mb = 3008
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/face-dedup-bulk_analyse"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 600_000


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, base_settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_UPLOADS_BUCKET": "uploads",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("faces", "uploads"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield {"s3": s3, "faces": S3BlobStore(s3, "faces"), "uploads": S3BlobStore(s3, "uploads", prefix="")}


def _handler(monkeypatch: pytest.MonkeyPatch, analyzer: Any) -> Any:
    from functions.bulk import handler

    from face_dedup import bootstrap

    if analyzer is not None:
        monkeypatch.setattr(bootstrap, "build_engine", lambda settings, pack, **kw: analyzer)
    handler._parts.cache_clear()
    return handler


def _upload(uploads: S3BlobStore, name: str, data: bytes, batch: str = "b1") -> None:
    uploads.put(f"bulk/t1/{batch}/{name}", data, "application/octet-stream")


def test_item_processor_writes_the_rows_analysed_in_manifest_order_with_their_reasons(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = get_pack(Settings.load().model_pack)
    fake = FakeFaceAnalyzer(pack)
    dim = fake.dim
    uploads: S3BlobStore = aws["uploads"]
    _upload(uploads, "ann.jpg", fake.face(b"ann", unit(dim, 3)))
    _upload(uploads, "bob.jpg", fake.face(b"bob", unit(dim, 4)))
    _upload(uploads, "wall.jpg", fake.reject(b"wall", Reason.NO_FACE, "no face found"))
    _upload(uploads, "ann.jpg", b"another batch's ann", batch="b2")  # never read here
    handler = _handler(monkeypatch, fake)
    items = [  # out of order within the item, as a batch may be built
        {"row": 3, "file": "wall.jpg", "application_id": "app-3"},
        {"row": 0, "file": "ann.jpg", "application_id": "app-0"},
        {"row": 1, "file": " bob.jpg ", "application_id": ""},
        {"row": 2, "file": "missing.jpg", "application_id": "app-2"},
        {"row": 4, "file": "../b2/ann.jpg", "application_id": "app-4"},
        {"row": 5, "file": "ann.jpg", "application_id": "bad id with spaces/.."},
    ]
    event = {"Items": items, "BatchInput": {"tenant": "t1", "batch": "b1", "job": "job-1"}}
    result = handler.handler(event, cast("LambdaContext", FakeContext()))

    assert result["rows"] == 6 and result["analysed"] == 2
    assert result["rejected"] == {
        "2": Reason.UNREADABLE.value,
        "3": Reason.NO_FACE.value,
        "4": Reason.NOT_A_FILE.value,
        "5": Reason.INVALID_APPLICATION_ID.value,
    }
    assert result["part"] == part_key("t1", "job-1", 0) == "_bulk/t1/job-1/part-000000000.json"
    # the item's result (kept by the map's result writer): row numbers and codes, no names or ids
    text = json.dumps(result)
    assert not any(secret in text for secret in ("ann", "bob", "wall", "app-", "missing"))

    # the part is in the faces bucket under the job's prefix (the bucket's KMS key in the stack)
    keys = aws["s3"].list_objects_v2(Bucket="faces")["Contents"]
    assert [k["Key"] for k in keys] == [
        "faces/_bulk/t1/job-1/part-000000000.json",
        "faces/_bulk/t1/job-1/vectors-000000000-000000005.npz",  # what the join reads: keys and templates
    ]
    loaded = load_parts(aws["faces"], tenant="t1", job="job-1", total_rows=7)
    assert loaded.missing == [6]  # a row no item wrote: the ordered step must not skip over it
    rows = loaded.rows
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4, 5]
    ann, bob = rows[0], rows[1]
    assert ann["outcome"] == bob["outcome"] == "analysed"
    vector = np.frombuffer(base64.b64decode(ann["embedding"]), dtype="<f4")
    assert np.array_equal(vector, unit(dim, 3).astype(np.float32))
    assert base64.b64decode(ann["aligned_png"]).startswith(b"\x89PNG")
    # the same idempotency key a plain import of the object would give
    service = handler._parts().service.for_tenant("t1")
    assert ann["key"] == service.idempotency_key(
        InputRef("bulk/t1/b1/ann.jpg", "app-0"), content_digest(b"ann")
    )
    assert bob["application_id"] is None and bob["source"] == "bulk/t1/b1/bob.jpg"
    assert rows[3]["reason"] == "NO_FACE" and rows[3]["key"]  # rejected, analysed: keyed
    assert rows[2]["reason"] == "UNREADABLE" and "missing.jpg" in rows[2]["message"]
    assert "embedding" not in rows[2] and "embedding" not in rows[3]
    rebuilt = template_of(ann)  # what the ordered step registers: the engine's answer itself
    analysed = fake.process(b"ann")
    assert rebuilt is not None and not isinstance(analysed, Rejection)
    assert np.array_equal(rebuilt.embedding, analysed.embedding)
    assert np.array_equal(rebuilt.aligned_crop, analysed.aligned_crop)
    assert (rebuilt.box, rebuilt.measures, rebuilt.faces_found) == (
        analysed.box,
        analysed.measures,
        analysed.faces_found,
    )
    assert template_of(rows[3]) is None

    # a retry of the same item writes the same part again: replaced, not duplicated
    handler.handler(event, cast("LambdaContext", FakeContext()))
    assert len(aws["s3"].list_objects_v2(Bucket="faces")["Contents"]) == 2  # the part, its vectors


@pytest.mark.parametrize(
    ("batch_input", "items", "match"),
    [
        ({"tenant": "../t2", "batch": "b1", "job": "j"}, [{"row": 0, "file": "a"}], "tenant"),
        ({"tenant": "t1", "batch": "b/1", "job": "j"}, [{"row": 0, "file": "a"}], "batch"),
        ({"tenant": "t1", "batch": "b1", "job": ""}, [{"row": 0, "file": "a"}], "job"),
        ({"tenant": "t1", "batch": "b1", "job": "j"}, [{"row": "0", "file": "a"}], "row"),
        ({"tenant": "t1", "batch": "b1", "job": "j"}, [{"row": 0}, {"row": 0}], "twice"),
        ({"tenant": "t1", "batch": "b1", "job": "j"}, [], "rows in one item"),
    ],
)
def test_a_malformed_item_fails_with_a_typed_error_and_writes_nothing(
    aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    batch_input: dict[str, Any],
    items: list[Any],
    match: str,
) -> None:
    handler = _handler(monkeypatch, FakeFaceAnalyzer(get_pack(Settings.load().model_pack)))
    with pytest.raises(ValueError, match=match):
        handler.handler({"Items": items, "BatchInput": batch_input}, cast("LambdaContext", FakeContext()))
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket="faces")
    with pytest.raises(BadItem):
        handler.handler({"Items": items}, cast("LambdaContext", FakeContext()))


def test_real_engine_on_a_shared_photo(
    aws: dict[str, Any], faces_root: Path, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function's own engine (the models in the models dir) on a labelled photo: the part
    holds the template the local pipeline computes for the same bytes."""
    photos = sorted((faces_root / "lfw").glob("*/*.jpg"))[:1] if (faces_root / "lfw").is_dir() else []
    if not photos:
        pytest.skip("no shared photos (../shared/data/faces/lfw)")
    from face_dedup.bootstrap import build_engine
    from face_dedup.vision.pipeline import FaceTemplate

    data = photos[0].read_bytes()
    _upload(aws["uploads"], "p.jpg", data)
    handler = _handler(monkeypatch, None)
    result = analyse_rows(
        service=handler._parts().service,
        uploads=aws["uploads"],
        parts=aws["faces"],
        tenant="t1",
        batch="b1",
        job="j1",
        items=[{"row": 0, "file": "p.jpg", "application_id": "a1"}],
    )
    local = build_engine(base_settings).process(data)
    (row,) = load_parts(aws["faces"], tenant="t1", job="j1", total_rows=1).rows
    if isinstance(local, FaceTemplate):
        assert result.analysed == 1
        rebuilt = template_of(row)
        assert rebuilt is not None
        assert float(rebuilt.embedding @ local.embedding) > 0.9999
        assert np.array_equal(rebuilt.aligned_crop, local.aligned_crop)  # PNG: lossless
    else:
        assert row["reason"] == local.reason.value
