"""A capture link sends photos until one is decided, through the API resolver with a real
registry (one machine's `POST /capture/upload`): otherwise one link could upload face after face
and learn from "accepted" or "under review" whether each face is already registered, opening a
case for an officer each time."""

from __future__ import annotations

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

OFFICER = {"cognito:username": "ann", "cognito:groups": "officer", "custom:tenant": "north"}
REGISTERED = "photos/deepface/id00/img1.jpg"  # enrolled first, under APP-1
SAME_PERSON = "photos/deepface/id00/img2.jpg"
STRANGER = "photos/deepface/id01/img3.jpg"


def call(
    method: str, path: str, *, headers: dict[str, str], body: bytes = b"", who: Any = None
) -> tuple[int, Any]:
    response = app.resolve(to_event(method, path, headers, body, who), LocalContext())  # type: ignore[arg-type]
    return response["statusCode"], json.loads(response.get("body") or "null")


@pytest.fixture
def registry(base_settings: Settings, tmp_path: Path) -> Iterator[DedupService]:
    service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
    configure(Dependencies(service=service, queries=queries_of(service), signer=ImageSigner(b"links-secret")))
    yield service.for_tenant("north")
    adapters.close()


def link(application_id: str) -> dict[str, str]:
    status, answer = call(
        "POST",
        "/capture/sessions",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"application_id": application_id}).encode(),
        who=OFFICER,
    )
    assert status == 200
    return {"X-Capture-Token": answer["token"], "Content-Type": "image/jpeg"}


def upload(token: dict[str, str], data: bytes) -> tuple[int, Any]:
    return call("POST", "/capture/upload", headers=token, body=data)


def test_a_link_sends_one_decided_photo_and_retakes_do_not_count(
    registry: DedupService, faces_root: Path
) -> None:
    registry.enroll((faces_root / REGISTERED).read_bytes(), InputRef("registry/1.jpg", "APP-1"))
    probe = link("APP-2")
    assert upload(probe, b"not a photo") == (200, {"state": "retake", "reason": "UNSUPPORTED_FORMAT"})
    # The registered person's other photo: a duplicate, shown as "under review", a case opened.
    assert upload(probe, (faces_root / SAME_PERSON).read_bytes()) == (200, {"state": "under_review"})
    cases = len(registry.store.list_cases(tenant="north"))
    status, answer = upload(probe, (faces_root / STRANGER).read_bytes())
    assert status == 409 and "new link" in answer["error"]  # no second face through this link
    assert call("POST", "/capture/upload-url", headers=probe)[0] == 409  # nor a cloud URL
    assert len(registry.store.list_cases(tenant="north")) == cases
    # The same photo again with the same link is refused too; a new link for the application works.
    assert upload(probe, (faces_root / SAME_PERSON).read_bytes())[0] == 409
    assert upload(link("APP-3"), (faces_root / STRANGER).read_bytes()) == (200, {"state": "enrolled"})
