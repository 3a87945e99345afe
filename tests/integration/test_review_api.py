"""The review API through the resolver, with API Gateway-shaped events: every route, roles,
tenants, pagination, bad input and the OpenAPI document."""

from __future__ import annotations

import base64
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

A1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
A2 = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
B1 = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"


def claims(name: str, role: str, tenant: str = "tenant-a") -> dict[str, str]:
    return {"cognito:username": name, "cognito:groups": role, "custom:tenant": tenant}


OFFICER = claims("ann", "officer")
OFFICER_2 = claims("bob", "officer")
SUPERVISOR = claims("sue", "supervisor")
AUDITOR = claims("al", "auditor")
OTHER_TENANT = claims("zed", "supervisor", "tenant-b")


def call(method: str, path: str, who: dict[str, str] | None, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if raw else {}
    response = app.resolve(to_event(method, path, headers, raw, who), LocalContext())  # type: ignore[arg-type]
    payload = response.get("body") or ""
    if response.get("isBase64Encoded"):
        return response["statusCode"], base64.b64decode(payload)
    kind = (response.get("multiValueHeaders") or {}).get("Content-Type", [""])[0] or (
        response.get("headers") or {}
    ).get("Content-Type", "")
    return response["statusCode"], json.loads(payload) if "application/json" in kind and payload else payload


@pytest.fixture
def api(base_settings: Settings, faces_root: Path, tmp_path: Path) -> Iterator[DedupService]:
    service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
    tenant_a = service.for_tenant("tenant-a")
    for name, application in ((A1, "APP-1"), (B1, "APP-2"), (A2, "APP-3")):
        tenant_a.enroll((faces_root / name).read_bytes(), InputRef(name, application))
    configure(
        Dependencies(
            service=service, queries=queries_of(service), signer=ImageSigner(b"test-secret", ttl_seconds=60)
        )
    )
    yield tenant_a
    adapters.close()


def only_case(who: dict[str, str]) -> str:
    status, page = call("GET", "/cases", who)
    assert status == 200 and len(page["cases"]) == 1
    return str(page["cases"][0]["case_id"])


def test_list_has_no_images_and_paginates(api: DedupService) -> None:
    status, page = call("GET", "/cases?limit=1", OFFICER)
    assert status == 200 and page["next_offset"] is None and len(page["cases"]) == 1
    text = json.dumps(page)
    assert "url" not in text and "photo" not in text and "Abel" not in text
    assert call("GET", "/cases?limit=0", OFFICER)[0] == 422
    assert call("GET", "/cases?status=bogus", OFFICER)[0] == 422
    assert call("GET", "/cases?status=closed", OFFICER)[1]["cases"] == []


def test_case_detail_links_images_and_explains_scores(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    status, case = call("GET", f"/cases/{case_id}", OFFICER)
    assert status == 200 and case["probe"]["application_id"] == "APP-3"
    candidate = case["candidates"][0]
    assert candidate["application_id"] == "APP-1" and 0 < candidate["false_match_rate"] < 1e-3
    image_status, crop = call("GET", candidate["crop_url"], OFFICER)
    assert image_status == 200 and crop[:4] == b"\x89PNG"
    photo_status, photo = call("GET", case["probe"]["photo_url"], OFFICER)
    assert photo_status == 200 and photo[:3] == b"\xff\xd8\xff"  # shown as a safe JPEG copy
    assert call("GET", candidate["crop_url"], OTHER_TENANT)[0] == 404  # a link is not a key to another tenant
    assert call("GET", "/images/forged.token", OFFICER)[0] == 404
    assert any(e.action == "case.viewed" for e in api.store.audit_events(tenant="tenant-a"))


def test_two_person_rule_over_http(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    assert call("POST", f"/cases/{case_id}/claim", OFFICER)[0] == 200
    candidate = call("GET", f"/cases/{case_id}", OFFICER)[1]["candidates"][0]["record_id"]
    same = {"decision": "same_person", "matched_record_id": candidate}
    status, body = call("POST", f"/cases/{case_id}/decision", OFFICER_2, same)
    assert status == 409 and "claimed by ann" in body["error"]
    status, case = call("POST", f"/cases/{case_id}/decision", OFFICER, same | {"comment": "scar"})
    assert status == 200 and case["status"] == "awaiting_confirmation"
    assert case["matched_record_id"] == candidate
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, {"decision": "different_people"})[0] == 409
    assert call("POST", f"/cases/{case_id}/confirmation", OFFICER, {"confirm": True})[0] == 403
    status, case = call(
        "POST", f"/cases/{case_id}/confirmation", SUPERVISOR, {"confirm": True, "comment": "ok"}
    )
    assert status == 200 and case["status"] == "closed" and case["confirmed_by"] == "sue"


def test_roles_and_tenants(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    assert call("GET", "/cases", None)[0] == 401
    assert call("POST", f"/cases/{case_id}/decision", AUDITOR, {"decision": "different_people"})[0] == 403
    assert call("GET", f"/cases/{case_id}", OTHER_TENANT)[0] == 404
    assert call("GET", "/cases", OTHER_TENANT)[1]["cases"] == []
    record_id = api.store.get_case(case_id).probe_record_id  # type: ignore[union-attr]
    assert call("DELETE", f"/records/{record_id}?reason=request-7", OFFICER)[0] == 403
    assert call("GET", "/audit", OFFICER)[0] == 403
    status, receipt = call("DELETE", f"/records/{record_id}?reason=request-7", SUPERVISOR)
    assert status == 200 and receipt["records"] == 1
    status, lines = call("GET", "/audit", AUDITOR)
    events = [json.loads(line) for line in lines.splitlines()]
    assert status == 200 and events[-1]["action"] == "record.erased" and events[-1]["actor"] == "sue"


def test_bad_input_gets_clear_4xx(api: DedupService) -> None:
    assert call("GET", "/cases/case_unknown", OFFICER)[0] == 404
    case_id = only_case(OFFICER)
    status, body = call("POST", f"/cases/{case_id}/decision", OFFICER, {"decision": "maybe"})
    assert status == 422 and "decision" in json.dumps(body)
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, {"comment": "no decision"})[0] == 422
    status, body = call(
        "POST",
        f"/cases/{case_id}/decision",
        OFFICER,
        {"decision": "same_person", "matched_record_id": "rec_not_a_candidate"},
    )
    assert status == 400 and "not a candidate" in body["error"]


def test_verify_and_uploads(api: DedupService, faces_root: Path) -> None:
    pair = {
        "first_image_base64": base64.b64encode((faces_root / A1).read_bytes()).decode(),
        "second_image_base64": base64.b64encode((faces_root / A2).read_bytes()).decode(),
    }
    status, result = call("POST", "/verify", OFFICER, pair)
    assert status == 200 and result["match"] is True
    assert call("POST", "/verify", AUDITOR, pair)[0] == 403
    assert (
        call("POST", "/verify", OFFICER, {"first_image_base64": "%%%", "second_image_base64": "x"})[0] == 400
    )
    status, body = call("POST", "/uploads", OFFICER, {"application_id": "APP-9"})
    assert status == 501 and "face-dedup import" in body["error"]  # no uploads bucket on one machine
    assert call("POST", "/uploads", OFFICER, {"application_id": "../etc"})[0] == 422


def test_openapi_document_lists_every_route() -> None:
    status, document = call("GET", "/openapi.json", None)
    assert status == 200 and document["info"]["title"] == "face-dedup review API"
    paths = document["paths"]
    for path in (
        "/cases",
        "/cases/{case_id}",
        "/cases/{case_id}/claim",
        "/cases/{case_id}/decision",
        "/cases/{case_id}/confirmation",
        "/verify",
        "/uploads",
        "/records/{record_id}",
        "/audit",
    ):
        assert path in paths, path
    assert "DecisionBody" in json.dumps(document["components"])


def headers_of(method: str, path: str, who: dict[str, str] | None, body: Any = None) -> dict[str, str]:
    raw = json.dumps(body).encode() if body is not None else b""
    response = app.resolve(to_event(method, path, {}, raw, who), LocalContext())  # type: ignore[arg-type]
    merged = {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()}
    return merged | (response.get("headers") or {})


def test_every_response_carries_security_headers(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    crop = call("GET", f"/cases/{case_id}", OFFICER)[1]["candidates"][0]["crop_url"]
    for method, path, who, body in (
        ("GET", "/cases", OFFICER, None),
        ("GET", "/cases?limit=0", OFFICER, None),  # a validation error
        ("GET", "/nowhere", OFFICER, None),  # no such route
        ("GET", "/cases", None, None),  # no identity
        ("POST", f"/cases/{case_id}/decision", AUDITOR, {"decision": "cannot_tell"}),
        ("GET", crop, OFFICER, None),  # a face image
    ):
        headers = headers_of(method, path, who, body)
        assert headers["Cache-Control"] == "no-store", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path


def test_console_csp_names_only_configured_origins(api: DedupService) -> None:
    csp = headers_of("GET", "/", None)["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp
    assert "connect-src 'self';" in csp and "img-src 'self' blob:;" in csp
    configure(
        Dependencies(
            service=api,
            queries=queries_of(api),
            signer=ImageSigner(b"k"),
            api_origin="https://api.example.org",
            image_origins=("https://faces.s3.eu-west-1.amazonaws.com",),
        )
    )
    csp = headers_of("GET", "/", None)["Content-Security-Policy"]
    assert "connect-src 'self' https://api.example.org;" in csp
    assert "img-src 'self' blob: https://faces.s3.eu-west-1.amazonaws.com;" in csp
    for bad in ("http://plain.example.org", "https://x.org; script-src *", "*"):
        with pytest.raises(ValueError, match="not an https origin"):
            Dependencies(service=api, queries=queries_of(api), signer=ImageSigner(b"k"), api_origin=bad)
    assert call("GET", "/static/console.js", None)[0] == 200
    assert call("GET", "/static/..%2Fapp.py", None)[0] == 404
    assert call("GET", "/static/app.py", None)[0] == 404


def test_decisions_name_what_they_decide(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    status, body = call("POST", f"/cases/{case_id}/decision", OFFICER, {"decision": "same_person"})
    assert status == 422 and "names the candidate" in body["error"]
    status, body = call(
        "POST", f"/cases/{case_id}/decision", OFFICER, {"decision": "cannot_tell", "comment": "x" * 2001}
    )
    assert status == 422 and body["error"].startswith("comment:")  # a sentence, not "HTTP 422"
    candidate = call("GET", f"/cases/{case_id}", OFFICER)[1]["candidates"][0]["record_id"]
    same = {"decision": "same_person", "matched_record_id": candidate}
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, same)[1]["matched_record_id"] == candidate
    status, body = call(
        "POST", f"/cases/{case_id}/confirmation", SUPERVISOR, {"confirm": False, "comment": "  "}
    )
    assert status == 422 and "needs a reason" in body["error"]
    status, case = call(
        "POST", f"/cases/{case_id}/confirmation", SUPERVISOR, {"confirm": False, "comment": "ears"}
    )
    assert status == 200 and case["status"] == "open" and case["escalated"] is True
    assert call("POST", "/uploads", OFFICER, {"application_id": "<img src=x onerror=alert(1)>"})[0] == 422


def test_queue_filters_totals_and_claims(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    status, page = call("GET", "/cases?limit=1&status=open&sort=newest", OFFICER)
    assert status == 200 and page["total"] == 1 and page["next_offset"] is None
    row = page["cases"][0]
    assert row["application_id"] == "APP-3" and row["channel"] == "registry import" and row["best_band"]
    assert call("GET", "/cases?escalated=true", OFFICER)[1]["total"] == 0
    assert call("GET", "/cases?mine=true", OFFICER)[1]["total"] == 0
    assert call("GET", "/cases?older_than_hours=1000", OFFICER)[1]["total"] == 0
    assert call("POST", f"/cases/{case_id}/claim", OFFICER)[0] == 200
    assert call("GET", "/cases?mine=true", OFFICER)[1]["cases"][0]["claimed_by"] == "ann"
    assert call("POST", f"/cases/{case_id}/release", OFFICER_2)[0] == 403  # not hers to release
    assert call("POST", f"/cases/{case_id}/release", AUDITOR)[0] == 403
    status, case = call("POST", f"/cases/{case_id}/release", SUPERVISOR)
    assert status == 200 and case["claimed_by"] is None
    assert call("POST", f"/cases/{case_id}/release", SUPERVISOR)[0] == 409  # nothing to release
    assert call("GET", "/me", AUDITOR)[1] == {"name": "al", "role": "auditor", "tenant": "tenant-a"}


def test_denied_requests_are_audited(api: DedupService) -> None:
    case_id = only_case(OFFICER)
    call("GET", "/cases", None)
    call("POST", f"/cases/{case_id}/decision", AUDITOR, {"decision": "cannot_tell"})
    call("GET", f"/cases/{case_id}", OTHER_TENANT)
    denied = [e for e in api.store.audit_events(tenant=None) if e.action == "request.denied"]
    seen = {(e.actor, e.details["status"]) for e in denied}
    assert ("anonymous", 401) in seen and ("al", 403) in seen and ("zed", 404) in seen
    zed = next(e for e in denied if e.actor == "zed")
    assert zed.tenant == "tenant-b"  # recorded where the caller lives, not in the tenant probed


def test_console_csp_allows_the_presigned_image_origin(api: DedupService) -> None:
    import boto3
    from moto import mock_aws

    from face_dedup.adapters.s3_blobs import S3BlobStore

    with mock_aws():
        cloudlike = api.for_tenant("tenant-a")
        client = boto3.client("s3", region_name="eu-west-1")
        cloudlike.blobs = S3BlobStore(client, "faces-bucket", prefix="")
        configure(Dependencies(service=cloudlike, queries=queries_of(cloudlike), signer=ImageSigner(b"k")))
        csp = headers_of("GET", "/", None)["Content-Security-Policy"]
    image_sources = csp.split("img-src ")[1].split(";")[0].split()
    assert image_sources[:2] == ["'self'", "blob:"] and len(image_sources) == 3
    assert image_sources[2].startswith("https://") and "amazonaws.com" in image_sources[2]
    assert "connect-src 'self';" in csp  # images need no fetch: connect-src stays 'self'


def test_undo_within_the_window_while_not_final(api: DedupService) -> None:
    from datetime import UTC, datetime, timedelta

    from face_dedup.domain import UNDO_MINUTES, Actor, Role
    from face_dedup.errors import InvalidState

    case_id = only_case(OFFICER)
    candidate = call("GET", f"/cases/{case_id}", OFFICER)[1]["candidates"][0]["record_id"]
    same = {"decision": "same_person", "matched_record_id": candidate}
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, same)[0] == 200
    assert call("POST", f"/cases/{case_id}/undo", OFFICER_2)[0] == 403  # only who decided
    status, case = call("POST", f"/cases/{case_id}/undo", OFFICER)
    assert status == 200 and case["status"] == "open" and case["decision"] is None
    assert case["claimed_by"] == "ann" and case["history"][-1]["action"] == "undone"
    # "cannot tell", then undone: back from the supervisors' queue
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, {"decision": "cannot_tell"})[1]["escalated"]
    status, case = call("POST", f"/cases/{case_id}/undo", OFFICER)
    assert status == 200 and case["escalated"] is False
    # past the window, nothing is taken back
    assert call("POST", f"/cases/{case_id}/decision", OFFICER, same)[0] == 200
    later = datetime.now(UTC) + timedelta(minutes=UNDO_MINUTES, seconds=1)
    with pytest.raises(InvalidState, match="undo window"):
        api.undo_decision(case_id, Actor("ann", Role.OFFICER), now=later)
    # once confirmed it is final
    assert call("POST", f"/cases/{case_id}/confirmation", SUPERVISOR, {"confirm": True})[0] == 200
    status, body = call("POST", f"/cases/{case_id}/undo", OFFICER)
    assert status == 409 and "final" in body["error"]
