"""The capture page's server side, without a browser: capture tokens, which routes the local gate
lets through, the config the page's checks read (the server's own objects), and the plain outcome
an applicant sees (never a score, never "duplicate")."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict

import pytest

from face_dedup.domain import ImportItem, Outcome
from face_dedup.models.registry import BROWSER_DETECTOR, get_pack
from face_dedup.settings import Settings
from face_dedup.vision.detect import DetectorConfig
from face_dedup_api.auth import Unauthorized
from face_dedup_api.capture import (
    CaptureTokens,
    body_limit,
    capture_config,
    capture_csp,
    is_public,
    plain_outcome,
)


def test_a_capture_token_names_tenant_and_application_and_expires() -> None:
    tokens = CaptureTokens(b"secret", ttl_seconds=60)
    grant = tokens.verify(tokens.issue("north", "APP-1"))
    assert (grant.tenant, grant.application_id) == ("north", "APP-1")
    assert time.time() < grant.expires_at <= time.time() + 60


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "x" * 2000,
        "no-signature",
        base64.urlsafe_b64encode(b'{"t":"north","a":"APP-1","e":9999999999}').decode() + ".00",
    ],
)
def test_forged_or_malformed_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(Unauthorized):
        CaptureTokens(b"secret").verify(token)


def test_an_expired_token_or_another_deployments_token_is_refused() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        CaptureTokens(b"secret", ttl_seconds=-1).verify(
            CaptureTokens(b"secret", ttl_seconds=-1).issue("n", "A")
        )
    with pytest.raises(Unauthorized):
        CaptureTokens(b"other").verify(CaptureTokens(b"secret").issue("n", "A"))


def test_a_tampered_payload_is_refused() -> None:
    payload, _, signature = CaptureTokens(b"secret").issue("north", "APP-1").partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload))
    claims["a"] = "APP-2"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    with pytest.raises(Unauthorized):
        CaptureTokens(b"secret").verify(f"{forged}.{signature}")


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/capture", True),
        ("GET", "/capture/static/capture.js", True),
        ("GET", "/capture/ort/ort-wasm-simd-threaded.wasm", True),
        ("GET", "/capture/model.onnx", True),
        ("GET", "/capture/config.json", True),
        ("GET", "/capture/outcome", True),
        ("POST", "/capture/upload", True),
        ("POST", "/capture/upload-url", True),
        ("POST", "/capture/sessions", False),  # staff only: issues tokens
        ("GET", "/capture/static/../../cases", False),
        ("GET", "/capture/other", False),
        ("DELETE", "/capture/upload", False),
        ("GET", "/cases", False),
    ],
)
def test_only_the_page_and_token_checked_routes_skip_staff_sign_in(
    method: str, path: str, public: bool
) -> None:
    assert is_public(method, path) is public


def test_only_the_upload_route_takes_a_photo_sized_body() -> None:
    assert body_limit("/capture/upload") == 10 * 1024 * 1024
    assert body_limit("/capture/sessions") is None


def test_the_page_reads_the_servers_own_thresholds() -> None:
    settings = Settings.load(environ={"FACE_DEDUP_QUALITY_MIN_BRIGHTNESS": "50"})
    pack = get_pack(settings.model_pack)
    config = capture_config(settings, pack, upload="direct")
    assert config["quality"] == asdict(settings.quality) and config["quality"]["min_brightness"] == 50
    assert config["detector"] == asdict(DetectorConfig())
    assert config["decode"] == asdict(settings.decode)  # TOO_SMALL / TOO_LARGE on the page too
    assert config["template"] == [list(p) for p in pack.contract.template]
    assert config["model"]["sha256"] == BROWSER_DETECTOR.sha256
    assert "TOO_DARK" in config["reasons"] and config["upload"] == "direct"


def item(outcome: Outcome, reason: str | None = None) -> ImportItem:
    return ImportItem("k", "t", "selfies/t/A/x.jpg", "A", "0" * 64, outcome, "now", reason=reason)


@pytest.mark.parametrize(
    ("outcome", "reason", "shown"),
    [
        (Outcome.ENROLLED, None, {"state": "enrolled"}),
        (Outcome.VERIFIED, None, {"state": "verified"}),
        (Outcome.REVIEW, None, {"state": "under_review"}),
        (
            Outcome.DUPLICATE,
            None,
            {"state": "under_review"},
        ),  # never "duplicate": that reveals another enrollment
        (Outcome.REJECTED, "TOO_DARK", {"state": "retake", "reason": "TOO_DARK"}),
        (Outcome.REJECTED, "LINK_OUTSIDE_FOLDER", {"state": "retake", "reason": "OTHER"}),
    ],
)
def test_the_applicant_sees_plain_outcomes_only(
    outcome: Outcome, reason: str | None, shown: dict[str, str]
) -> None:
    assert plain_outcome(item(outcome, reason)) == shown
    assert plain_outcome(None) == {"state": "pending"}


def test_the_page_policy_allows_wasm_but_not_eval_or_other_origins() -> None:
    policy = capture_csp()
    assert "script-src 'self' 'wasm-unsafe-eval';" in policy
    assert "'unsafe-eval'" not in policy.replace("'wasm-unsafe-eval'", "")
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert "connect-src 'self' https://uploads.example" in capture_csp(("https://uploads.example",))
