"""The selfie channel's capture page: served by the review API, run in the applicant's browser.

The page (static/capture/) opens the front camera, runs the same YuNet detector and the same
quality checks as the server on the device, and sends nothing before the person presses "use
this photo". What it needs from here:

- the page, its script and styles, and onnxruntime-web's files from the npm package installed
  by `make capture` (never a CDN);
- the detector weights, from the installed model pack (folded to fp32 for onnxruntime-web; the
  page checks the pinned SHA-256 before running them);
- `config.json`: the server's own quality thresholds, detector settings and reason codes, read
  from the running settings, so the page and the server cannot drift apart;
- a capture token (`POST /capture/sessions`, for the registry's staff or backend): names tenant
  and application, expires, and is the page's only credential. It travels in the URL fragment
  (never sent to a server, never in logs or Referer) and then in the `X-Capture-Token` header;
- `POST /capture/upload` (one machine: the photo is enrolled at once) or
  `POST /capture/upload-url` (cloud: a presigned PUT to the uploads bucket), and
  `GET /capture/outcome`: the result in plain words, never a score or anyone else's data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel, Field

from face_dedup.domain import ImportItem, Outcome, Role
from face_dedup.errors import InvalidState, ModelError, NotFound, Reason
from face_dedup.identifiers import APPLICATION_ID_PATTERN
from face_dedup.models.convert import CONVERSIONS
from face_dedup.models.registry import BROWSER_DETECTOR, ModelPack, get_pack, sha256_file, verified_path
from face_dedup.queries import Reader, TenantReader
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from face_dedup.vision.detect import DetectorConfig
from face_dedup.vision.quality import _TEMPLATE_PITCH
from face_dedup_api.app import NotAvailableHere, _caller, _dependencies, _require, _service, app
from face_dedup_api.auth import Unauthorized
from face_dedup_api.capture_files import ORT_FILES as ORT_FILES
from face_dedup_api.capture_files import PAGE_FILES as PAGE_FILES
from face_dedup_api.capture_files import ROOT as ROOT
from face_dedup_api.capture_files import ort_dir as ort_dir

TOKEN_SECONDS = 15 * 60  # long enough to take a photo and read the outcome, short enough to be useless later
MAX_UPLOAD = 10 * 1024 * 1024  # a phone camera's JPEG; the server's own decode limits apply after
DIGEST = re.compile(r"^[0-9a-f]{64}$")
LINK_ID = re.compile(r"^[0-9a-f]{16}$")
# The uploads bucket's origin in the page's CSP: https, or plain http on loopback only (an S3
# stand-in on this machine, as the browser test's moto server).
_HTTPS_ORIGIN = re.compile(r"^(https://[A-Za-z0-9.-]+|http://(127\.0\.0\.1|localhost))(:[0-9]{1,5})?$")
# Reasons a person can fix by taking another photo; anything else is reported as OTHER.
PHOTO_REASONS = {
    Reason.NO_FACE,
    Reason.MULTIPLE_FACES,
    Reason.LOW_CONFIDENCE,
    Reason.IMPLAUSIBLE_LANDMARKS,
    Reason.FACE_TOO_SMALL,
    Reason.EXTREME_POSE,
    Reason.BLURRY,
    Reason.TOO_DARK,
    Reason.TOO_BRIGHT,
    Reason.EMPTY_FILE,
    Reason.UNSUPPORTED_FORMAT,
    Reason.UNDECODABLE,
    Reason.TOO_LARGE,
    Reason.TOO_SMALL,
}
_PUBLIC_GET = re.compile(r"^/capture(/(static|ort)/[A-Za-z0-9._-]+|/model\.onnx|/config\.json|/outcome)?$")
_PUBLIC_POST = {"/capture/upload", "/capture/upload-url"}


def is_public(method: str, path: str) -> bool:
    """Routes the local gate lets through without a staff token: the page and its files carry no
    data, and the upload/outcome routes check the capture token themselves."""
    if method == "GET":
        return bool(_PUBLIC_GET.fullmatch(path))
    return method == "POST" and path in _PUBLIC_POST


def body_limit(path: str) -> int | None:
    return MAX_UPLOAD if path == "/capture/upload" else None


# -- capture tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureGrant:
    tenant: str
    application_id: str
    expires_at: int
    link: str  # this link's own id: its photos' keys start with it (see `spent`)

    @property
    def key_prefix(self) -> str:
        return f"selfies/{self.tenant}/{self.application_id}/{self.link}-"


class CaptureTokens:
    """HMAC-signed, expiring grants to upload one application's selfie. The key is derived from
    the deployment's image-link secret with a separate label, so an image link is never a
    capture token and the other way round."""

    def __init__(self, secret: bytes, ttl_seconds: int = TOKEN_SECONDS) -> None:
        self._key = hmac.new(secret, b"face-dedup capture token v1", hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    def issue(self, tenant: str, application_id: str) -> str:
        claims = {
            "t": tenant,
            "a": application_id,
            "e": int(time.time()) + self.ttl_seconds,
            "n": secrets.token_hex(8),
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode()
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None) -> CaptureGrant:
        if not token or len(token) > 1000:
            raise Unauthorized("no valid capture token: open the link the registry gave you again")
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            raise Unauthorized("no valid capture token: open the link the registry gave you again")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
            grant = CaptureGrant(str(claims["t"]), str(claims["a"]), int(claims["e"]), str(claims["n"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthorized("no valid capture token") from None
        if not LINK_ID.fullmatch(grant.link):
            raise Unauthorized("no valid capture token")
        if grant.expires_at < time.time():
            raise Unauthorized("this capture link has expired: ask the registry for a new one")
        return grant

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()


def _tokens() -> CaptureTokens:
    signer = _dependencies().signer
    return CaptureTokens(signer._secret)  # a derived key: see CaptureTokens


def check_token(token: str | None) -> CaptureGrant:
    """For the local gate: refuse an upload without a valid token before reading its body."""
    return _tokens().verify(token)


def _grant() -> CaptureGrant:
    return _tokens().verify(app.current_event.headers.get("X-Capture-Token"))


# -- what the page needs -------------------------------------------------------------------------


def capture_config(settings: Settings, pack: ModelPack, *, upload: str) -> dict[str, Any]:
    """Everything the page's checks depend on, from the server's own objects (one source of truth)."""
    quality = settings.quality
    return {
        "model_pack": pack.id,
        "model": {"url": "/capture/model.onnx", "sha256": BROWSER_DETECTOR.sha256, "input_size": 640},
        "detector": asdict(DetectorConfig()),
        "quality": asdict(quality),
        "template": [list(point) for point in pack.contract.template],
        "template_size": list(pack.contract.input_size),
        "template_pitch": _TEMPLATE_PITCH,
        "max_side": settings.decode.working_long_side,
        "decode": asdict(settings.decode),
        "reasons": [reason.value for reason in Reason],
        "upload": upload,
        "max_upload_bytes": MAX_UPLOAD,
    }


def install_browser_detector(models_dir: Path, pack: ModelPack) -> Path:
    """Fold the installed (verified) detector to fp32 for onnxruntime-web, check the pinned digest."""
    target = models_dir / pack.files_dir / BROWSER_DETECTOR.filename
    if target.is_file() and sha256_file(target) == BROWSER_DETECTOR.sha256:
        return target
    source = verified_path(models_dir, pack, pack.detector)
    assert BROWSER_DETECTOR.conversion is not None
    staged = target.with_name(target.name + ".partial")
    CONVERSIONS[BROWSER_DETECTOR.conversion](source, staged)
    digest = sha256_file(staged)
    if digest != BROWSER_DETECTOR.sha256:
        staged.unlink()
        raise ModelError(
            f"{BROWSER_DETECTOR.filename} has sha256 {digest}, expected {BROWSER_DETECTOR.sha256}: the "
            "onnx package's version may differ from the pinned one (pyproject extra `models`)"
        )
    staged.replace(target)
    return target


def capture_csp(connect_origins: tuple[str, ...] = ()) -> str:
    """As strict as the console's, plus 'wasm-unsafe-eval': onnxruntime-web compiles its
    WebAssembly with WebAssembly.instantiate, which script-src 'self' alone forbids. It allows
    compiling wasm only, not eval() of JavaScript; the wasm file itself comes from 'self'."""
    connect = " ".join(["'self'", *connect_origins])
    return (
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
        f"img-src 'self' blob:; media-src 'self' blob: mediastream:; connect-src {connect}; "
        "worker-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _page_text(name: str) -> str:
    return resources.files("face_dedup_api").joinpath(f"static/capture/{name}").read_text(encoding="utf-8")


# -- routes --------------------------------------------------------------------------------------


@app.get("/capture", include_in_schema=False)
def capture_page() -> Response[str]:
    return Response(
        status_code=200,
        content_type="text/html; charset=utf-8",
        body=_page_text("capture.html"),
        headers={
            "Content-Security-Policy": capture_csp(_upload_origin()),
            "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
        },
    )


def _upload_origin() -> tuple[str, ...]:
    """Where the page PUTs the photo in the cloud (the uploads bucket's endpoint), learned by
    presigning a dummy key: signing is local, nothing is fetched. Empty on one machine."""
    uploads = _dependencies().uploads
    url = uploads.presigned_upload("csp-probe", "image/jpeg", 1) if uploads is not None else None
    if not url:
        return ()
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return (origin,) if _HTTPS_ORIGIN.fullmatch(origin) else ()


@app.get("/capture/static/<name>", include_in_schema=False)
def capture_file(name: str) -> Response[str]:
    """The page's own files: a fixed list, never a path from the request."""
    kind = PAGE_FILES.get(name)
    if kind is None:
        raise NotFound("no such file")
    return Response(status_code=200, content_type=kind, body=_page_text(name))


@app.get("/capture/ort/<name>", include_in_schema=False)
def capture_runtime(name: str):  # type: ignore[no-untyped-def]  # bytes body: see app.image
    kind = ORT_FILES.get(name)
    path = ort_dir() / name
    if kind is None or not path.is_file():
        raise NotFound("no such file (is onnxruntime-web installed? `make capture`)")
    return Response(status_code=200, content_type=kind, body=path.read_bytes())


@app.get("/capture/model.onnx", include_in_schema=False)
def capture_model():  # type: ignore[no-untyped-def]  # bytes body: see app.image
    settings = _dependencies().service.settings
    path = settings.models_dir / get_pack(settings.model_pack).files_dir / BROWSER_DETECTOR.filename
    if not path.is_file():
        raise NotFound("the browser detector is not installed: `make capture`")
    return Response(status_code=200, content_type="application/octet-stream", body=path.read_bytes())


@app.get("/capture/config.json", include_in_schema=False)
def capture_settings() -> Response[str]:
    deps = _dependencies()
    settings = deps.service.settings
    config = capture_config(
        settings, get_pack(settings.model_pack), upload="direct" if deps.uploads is None else "presigned"
    )
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(config))


class CaptureSessionBody(BaseModel):
    application_id: str = Field(pattern=APPLICATION_ID_PATTERN)


@app.post("/capture/sessions", summary="A capture link for one application's selfie", tags=["verification"])
def capture_session(body: CaptureSessionBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN)
    tokens = _tokens()
    token = tokens.issue(caller.tenant, body.application_id)
    _service(caller).record_event(
        "capture.link_issued", caller.actor.name, application_id=body.application_id
    )
    return {
        "token": token,
        "expires_in": tokens.ttl_seconds,
        # The fragment is never sent to a server: the token stays out of logs and Referer.
        "path": f"/capture#token={token}",
    }


def _raw_body() -> bytes:
    event = app.current_event
    body = event.body or ""
    return base64.b64decode(body) if event.is_base64_encoded else body.encode("latin-1")


@app.post("/capture/upload", include_in_schema=False)
def capture_upload() -> dict[str, Any]:
    """One machine: the photo is analysed and enrolled now, as a selfie of the token's application."""
    grant = _grant()
    deps = _dependencies()
    if deps.uploads is not None:
        raise NotAvailableHere("upload through /capture/upload-url here")
    kind = (app.current_event.headers.get("Content-Type") or "").split(";")[0].strip()
    if kind != "image/jpeg":
        raise ValueError("the photo must be sent as image/jpeg")
    data = _raw_body()
    if len(data) > MAX_UPLOAD:
        raise ValueError(f"the photo is over {MAX_UPLOAD} bytes")
    service = deps.service.for_tenant(grant.tenant)
    refuse_if_spent(service.model_pack, grant)
    key = f"{grant.key_prefix}{uuid.uuid4().hex}.jpg"
    item = service.enroll(data, InputRef(key, grant.application_id), actor="upload:selfie")
    return plain_outcome(item)


@app.post("/capture/upload-url", include_in_schema=False)
def capture_upload_url() -> dict[str, Any]:
    """Cloud: a presigned form upload (POST) for this application's selfie, valid five minutes.
    Not a presigned PUT: S3 enforces the form's policy (image/jpeg, at most MAX_UPLOAD bytes, this
    key), and the bucket's KMS encryption travels as form fields, where a PUT would sign
    x-amz-server-side-encryption headers the browser would have to send."""
    grant = _grant()
    deps = _dependencies()
    uploads = deps.uploads
    refuse_if_spent(deps.service.for_tenant(grant.tenant).model_pack, grant)
    key = f"{grant.key_prefix}{uuid.uuid4().hex}.jpg"
    post = uploads.presigned_post(key, "image/jpeg", MAX_UPLOAD, 300) if uploads is not None else None
    if post is None:
        raise NotAvailableHere("upload through /capture/upload here")
    return {"url": post["url"], "fields": post["fields"], "method": "POST", "expires_in": 300}


@app.get("/capture/outcome", include_in_schema=False)
def capture_outcome() -> dict[str, Any]:
    """What became of the photo with this SHA-256 (the page computed it before sending)."""
    grant = _grant()
    digest = (app.current_event.query_string_parameters or {}).get("digest") or ""
    if not DIGEST.fullmatch(digest):
        raise ValueError("digest: the photo's SHA-256, 64 lower-case hex digits")
    service = _dependencies().service.for_tenant(grant.tenant)
    key = service.idempotency_key(InputRef("", grant.application_id), digest)
    return plain_outcome(_applicant(grant).import_item(key))


def _applicant(grant: CaptureGrant) -> TenantReader:
    """What a capture link may read: its own application's outcome, in its tenant (queries.py)."""
    return _dependencies().queries.reader(Reader.APPLICANT, grant.tenant)


def refuse_if_spent(model_pack: str, grant: CaptureGrant) -> None:
    """A link sends photos until one is decided (accepted, verified or sent to review); after a
    "retake" the person tries again. Without this, one link could upload face after face: each
    answer "accepted" or "under review" says whether that face is already registered, and each
    duplicate opens a case for an officer. In the cloud the decision comes after the upload, so
    a fast client can still hold a few URLs at once (each valid five minutes)."""
    records = _applicant(grant).application_records(grant.application_id, model_pack)
    if any(record.source.startswith(grant.key_prefix) for record in records):
        raise InvalidState(
            "this link has already sent a photo: ask the registry for a new link to send another"
        )


def plain_outcome(item: ImportItem | None) -> dict[str, Any]:
    """The applicant's view: no score, no candidate, no case id, no other person's data."""
    if item is None:
        return {"state": "pending"}
    if item.outcome is Outcome.ENROLLED:
        return {"state": "enrolled"}
    if item.outcome is Outcome.VERIFIED:
        return {"state": "verified"}
    if item.outcome is Outcome.REJECTED:
        reason = item.reason if item.reason in {r.value for r in PHOTO_REASONS} else "OTHER"
        return {"state": "retake", "reason": reason}
    # REVIEW and DUPLICATE alike: telling the applicant "duplicate" would reveal another enrollment.
    return {"state": "under_review"}


def service_config(service: DedupService) -> dict[str, Any]:
    """The config the page would get from this service (tests and the consistency check)."""
    return capture_config(service.settings, get_pack(service.settings.model_pack), upload="direct")
