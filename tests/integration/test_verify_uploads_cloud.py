"""1:1 verify in the cloud, through the API resolver with moto's (versioned) S3 as the uploads
bucket: `POST /verify/uploads` grants two presigned form uploads bound to a key, a content type
and the photo size limit; the photos are POSTed straight to the bucket (real HTTP through
`requests`, answered by moto); `POST /verify` names the upload and the photos are gone after.
An inline (base64) body is refused here: the firewall admits bodies of at most 8 KB
(tests/infra/test_deployability.py checks that limit against the synthesized template)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from face_dedup.bootstrap import build_service
from face_dedup.settings import Settings
from face_dedup_api.app import VERIFY_PREFIX, Dependencies, configure
from face_dedup_api.images import ImageSigner
from tests.integration.test_capture_cloud import call
from tests.support.review_api import queries_of

pytestmark = pytest.mark.shared_data

OFFICER = {"cognito:username": "ann", "cognito:groups": "officer", "custom:tenant": "tenant-a"}
JSON = {"Content-Type": "application/json"}
SAME = ("lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg", "lfw/Abel_Pacheco/Abel_Pacheco_0002.jpg")


@pytest.fixture
def bucket(base_settings: Settings, tmp_path: Path) -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    from face_dedup.adapters.s3_blobs import S3BlobStore

    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket="uploads", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.put_bucket_versioning(Bucket="uploads", VersioningConfiguration={"Status": "Enabled"})
        service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
        uploads = S3BlobStore(client, "uploads", prefix="")
        configure(
            Dependencies(
                service=service,
                queries=queries_of(service),
                signer=ImageSigner(b"cloud-secret"),
                uploads=uploads,
            )
        )
        yield client
        adapters.close()


def _grant(content_types: dict[str, str] | None = None) -> dict[str, Any]:
    status, grant, _ = call(
        "POST", "/verify/uploads", who=OFFICER, headers=JSON, body=json.dumps(content_types or {}).encode()
    )
    assert status == 200, grant
    return grant  # type: ignore[no-any-return]


def _post(upload: dict[str, Any], data: bytes, content_type: str = "image/jpeg") -> int:
    import requests

    fields = {**upload["fields"], "Content-Type": content_type}
    response = requests.post(upload["url"], data=fields, files={"file": ("photo", data)}, timeout=10)
    return response.status_code


def _versions(client: Any) -> list[str]:
    listing = client.list_object_versions(Bucket="uploads", Prefix=VERIFY_PREFIX)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def test_verify_by_presigned_upload_then_photos_are_gone(bucket: Any, faces_root: Path) -> None:
    grant = _grant({"second_content_type": "image/png"})
    assert grant["max_bytes"] == 25 * 1024 * 1024 and grant["expires_in"] == 300
    first, second = grant["uploads"]
    assert (first["which"], second["which"]) == ("first", "second")
    # The policy S3 enforces: this key, this content type, 1 byte to the photo limit.
    policy = json.loads(base64.b64decode(first["fields"]["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", 1, grant["max_bytes"]] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert {"key": f"verify/tenant-a/{grant['upload_id']}/first"} in conditions
    assert json.loads(base64.b64decode(second["fields"]["policy"]))["conditions"].count(
        {"Content-Type": "image/png"}
    )

    # Second photo missing: a clear 404, and what was uploaded is deleted anyway.
    assert _post(first, (faces_root / SAME[0]).read_bytes()) in (200, 204)
    body = json.dumps({"upload_id": grant["upload_id"]}).encode()
    status, error, _ = call("POST", "/verify", who=OFFICER, headers=JSON, body=body)
    assert status == 404 and "second photo" in json.dumps(error)
    assert _versions(bucket) == []

    grant = _grant()
    for upload, name in zip(grant["uploads"], SAME, strict=True):
        assert _post(upload, (faces_root / name).read_bytes()) in (200, 204)
    assert len(_versions(bucket)) == 2
    body = json.dumps({"upload_id": grant["upload_id"]}).encode()
    assert len(body) < 8 * 1024  # what the firewall admits
    status, result, _ = call("POST", "/verify", who=OFFICER, headers=JSON, body=body)
    assert status == 200 and result["match"] is True and result["rejected"] == []
    assert _versions(bucket) == []  # every version deleted, not hidden behind a delete marker
    # Used once: the same upload id again finds nothing.
    assert call("POST", "/verify", who=OFFICER, headers=JSON, body=body)[0] == 404


def test_another_tenant_cannot_verify_with_an_upload_id(bucket: Any, faces_root: Path) -> None:
    grant = _grant()
    for upload, name in zip(grant["uploads"], SAME, strict=True):
        assert _post(upload, (faces_root / name).read_bytes()) in (200, 204)
    other = {**OFFICER, "custom:tenant": "tenant-b"}
    body = json.dumps({"upload_id": grant["upload_id"]}).encode()
    assert call("POST", "/verify", who=other, headers=JSON, body=body)[0] == 404
    assert len(_versions(bucket)) == 2  # tenant-a's photos untouched by tenant-b's call


def test_inline_photos_and_bad_bodies_are_refused_in_the_cloud(bucket: Any) -> None:
    inline = {"first_image_base64": "AAAA", "second_image_base64": "AAAA"}
    status, error, _ = call("POST", "/verify", who=OFFICER, headers=JSON, body=json.dumps(inline).encode())
    assert status == 501 and "/verify/uploads" in json.dumps(error)
    for bad in ({"upload_id": "../../selfies/x"}, {}, {**inline, "upload_id": "0" * 32}):
        assert call("POST", "/verify", who=OFFICER, headers=JSON, body=json.dumps(bad).encode())[0] == 422
    bad_type = json.dumps({"first_content_type": "text/html"}).encode()
    assert call("POST", "/verify/uploads", who=OFFICER, headers=JSON, body=bad_type)[0] == 422
    assert call("POST", "/verify/uploads", headers=JSON, body=b"{}")[0] == 401
