"""The capture page's cloud path through the API resolver, with moto's S3 as the uploads bucket:
a capture link from staff, a presigned PUT bound to the token's tenant and application, the
photo PUT to it (real HTTP through `requests`, answered by moto), and the plain outcome by the
photo's SHA-256 (pending until the pipeline has decided, then in plain words). The pipeline
step itself (S3 event -> ingest -> workflow) is stood in for by `service.enroll` with the same
key and application: tests/e2e/test_serverless_on_moto.py runs the real one."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from face_dedup.bootstrap import build_service
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from face_dedup_api.app import Dependencies, app, configure
from face_dedup_api.images import ImageSigner
from face_dedup_api.local_server import LocalContext, to_event
from tests.support.review_api import queries_of

pytestmark = pytest.mark.shared_data

OFFICER = {"cognito:username": "ann", "cognito:groups": "officer", "custom:tenant": "tenant-a"}
PHOTO = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"


def call(
    method: str,
    path: str,
    *,
    who: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, Any, dict[str, Any]]:
    response = app.resolve(to_event(method, path, headers or {}, body, who), LocalContext())  # type: ignore[arg-type]
    payload = response.get("body") or ""
    if response.get("isBase64Encoded"):
        payload = base64.b64decode(payload).decode("utf-8", "replace")
    single = response.get("headers") or {}
    multi = {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()}
    all_headers = {**multi, **single}
    is_json = "json" in str(all_headers.get("Content-Type", ""))
    return response["statusCode"], json.loads(payload) if is_json and payload else payload, all_headers


@pytest.fixture
def cloud(base_settings: Settings, tmp_path: Path) -> Iterator[tuple[DedupService, Any]]:
    import boto3
    from moto import mock_aws

    from face_dedup.adapters.s3_blobs import S3BlobStore

    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket="uploads", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
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
        yield service.for_tenant("tenant-a"), client
        adapters.close()


def test_presigned_upload_then_plain_outcome(cloud: tuple[DedupService, Any], faces_root: Path) -> None:
    import requests

    service, client = cloud
    status, link, _ = call(
        "POST",
        "/capture/sessions",
        who=OFFICER,
        headers={"Content-Type": "application/json"},
        body=json.dumps({"application_id": "APP-7"}).encode(),
    )
    assert status == 200 and link["path"].startswith("/capture#token=")
    token = {"X-Capture-Token": link["token"]}

    status, page_config, _ = call("GET", "/capture/config.json")
    assert status == 200 and page_config["upload"] == "presigned"
    status, _, page_headers = call("GET", "/capture")
    csp = page_headers["Content-Security-Policy"]
    connect = csp.split("connect-src ")[1].split(";")[0].split()
    assert connect[0] == "'self'" and len(connect) == 2 and "amazonaws.com" in connect[1]  # the bucket only

    assert (
        call("POST", "/capture/upload", headers={**token, "Content-Type": "image/jpeg"}, body=b"x")[0] == 501
    )
    assert call("POST", "/capture/upload-url")[0] == 401  # no token, no URL
    status, grant, _ = call("POST", "/capture/upload-url", headers=token)
    assert status == 200 and grant["method"] == "POST" and grant["expires_in"] == 300

    data = (faces_root / PHOTO).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    outcome_path = f"/capture/outcome?digest={digest}"
    assert call("GET", outcome_path, headers=token)[1] == {"state": "pending"}

    # The policy S3 enforces (moto does not): this key, image/jpeg, 1 byte to 10 MB.
    conditions = json.loads(base64.b64decode(grant["fields"]["policy"]))["conditions"]
    assert ["content-length-range", 1, 10 * 1024 * 1024] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    (key_rule,) = [c for c in conditions if isinstance(c, dict) and "key" in c]
    assert key_rule["key"].startswith("selfies/tenant-a/APP-7/")
    form = {**grant["fields"]}
    sent = requests.post(grant["url"], data=form, files={"file": ("p.jpg", data, "image/jpeg")}, timeout=30)
    assert sent.status_code < 300
    (key,) = [o["Key"] for o in client.list_objects_v2(Bucket="uploads")["Contents"]]
    assert key.startswith("selfies/tenant-a/APP-7/") and key.endswith(".jpg")  # bound to the token

    service.enroll(client.get_object(Bucket="uploads", Key=key)["Body"].read(), InputRef(key, "APP-7"))
    status, outcome, _ = call("GET", outcome_path, headers=token)
    assert status == 200 and outcome == {"state": "enrolled"}  # nothing else: no score, no ids
    assert call("GET", "/capture/outcome?digest=../../etc", headers=token)[0] == 400
    # Another application's token does not see this photo's outcome.
    other = call(
        "POST",
        "/capture/sessions",
        who=OFFICER,
        headers={"Content-Type": "application/json"},
        body=json.dumps({"application_id": "APP-8"}).encode(),
    )[1]["token"]
    assert call("GET", outcome_path, headers={"X-Capture-Token": other})[1] == {"state": "pending"}
