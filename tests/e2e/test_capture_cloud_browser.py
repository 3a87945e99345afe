"""The capture page's cloud path in real headless Chromium: `/capture/upload-url` grants a
presigned form upload to an S3 bucket (moto's server on loopback, real HTTP), the page posts the
photo there (no-cors, no CORS rule on the bucket) with the policy's fields, and polls
`/capture/outcome` until the pipeline has decided. The pipeline step (S3 event -> ingest ->
workflow) is stood in for by `service.enroll` on the object the page stored, with the key's
application, as in tests/integration/test_capture_cloud.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from face_dedup.bootstrap import build_service
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from face_dedup_api.app import Dependencies, configure
from face_dedup_api.auth import LocalUsers
from face_dedup_api.images import ImageSigner
from face_dedup_api.local_server import serve
from tests.e2e.test_capture_browser import (
    OFFICER_TOKEN,
    TENANT,
    capture_link,
    chromium,
    good_frame,
    phase,
    text,
    verdict,
    wait_for,
    write_y4m,
)
from tests.support.review_api import queries_of

pytestmark = pytest.mark.shared_data


@pytest.fixture
def cloud(base_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, DedupService, Any]]:
    import boto3
    from moto.server import ThreadedMotoServer

    from face_dedup.adapters.s3_blobs import S3BlobStore

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    client = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's server accepts any
    )
    kms = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    client.create_bucket(Bucket="uploads", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "name": "ann",
                        "role": "officer",
                        "tenant": TENANT,
                        "token_sha256": LocalUsers.digest(OFFICER_TOKEN),
                    }
                ]
            }
        )
    )
    registry = service.for_tenant(TENANT)
    # As the stack wires it: the uploads bucket encrypted with the deployment's KMS key.
    uploads = S3BlobStore(client, "uploads", prefix="", kms_key_id=key_id)
    configure(
        Dependencies(
            service=registry, queries=queries_of(registry), signer=ImageSigner(b"cloud-page"), uploads=uploads
        )
    )
    local = serve(LocalUsers.load(users), "127.0.0.1", 0)
    local.start_background()
    yield f"http://127.0.0.1:{local.server_address[1]}", registry, client
    local.shutdown()
    local.server_close()
    adapters.close()
    moto.stop()


def test_the_page_uploads_by_presigned_form_and_shows_the_decided_outcome(
    cloud: tuple[str, DedupService, Any], faces_root: Path, tmp_path: Path
) -> None:
    base, registry, client = cloud
    frame = good_frame(faces_root)
    driver = chromium(tmp_path, write_y4m(tmp_path / "good.y4m", frame))
    try:
        driver.get(capture_link(base, "APP-CLOUD"))
        wait_for(driver, lambda d: verdict(d) == "READY")
        driver.find_element("id", "capture").click()
        wait_for(driver, lambda d: phase(d) == "still")
        driver.find_element("id", "use").click()
        wait_for(driver, lambda d: phase(d) == "waiting")  # posted; now polling the outcome
        deadline = time.monotonic() + 30
        objects: list[dict[str, Any]] = []
        while not objects and time.monotonic() < deadline:
            objects = client.list_objects_v2(Bucket="uploads").get("Contents", [])
            time.sleep(0.2)
        (stored,) = objects
        key = stored["Key"]
        assert key.startswith(f"selfies/{TENANT}/APP-CLOUD/") and key.endswith(".jpg")
        head = client.head_object(Bucket="uploads", Key=key)
        # (moto's form upload neither applies nor checks the encryption fields; S3 does both)
        assert head["ContentType"] == "image/jpeg"
        data = client.get_object(Bucket="uploads", Key=key)["Body"].read()
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
        assert phase(driver) == "waiting"  # nothing decided yet: the page says so and waits
        registry.enroll(data, InputRef(key, "APP-CLOUD"))  # the pipeline's step
        wait_for(driver, lambda d: phase(d) == "done", timeout=30)
        assert driver.execute_script("return document.getElementById('result').dataset.outcome") == "enrolled"
        assert "accepted" in text(driver, "result")
    finally:
        driver.quit()
