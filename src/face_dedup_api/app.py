"""The review API: one Powertools REST resolver, served by API Gateway (functions/api) and by
`face-dedup serve`. Every route resolves the caller (role, tenant) first; the service it
calls is that tenant's, so tenant B's ids do not exist for tenant A. Face images never appear
in list responses: a case's detail carries short-lived links only."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field

from face_dedup.domain import Case, CaseDecision, Role
from face_dedup.errors import InvalidState, NotFound, PermissionDenied
from face_dedup.ports import BlobStore
from face_dedup.service import DedupService, crop_key, photo_key
from face_dedup_api.auth import Caller, Unauthorized, caller_from_claims
from face_dedup_api.images import ImageSigner

app = APIGatewayRestResolver(enable_validation=True)
app.configure_openapi(
    title="face-dedup review API",
    version="1.0.0",
    summary="Cases of possible duplicate enrollments, for case officers, supervisors and auditors.",
)


@dataclass
class Dependencies:
    service: DedupService
    signer: ImageSigner
    uploads: BlobStore | None = None  # the uploads bucket (cloud); None locally


_deps: Dependencies | None = None


def configure(dependencies: Dependencies) -> None:
    """Set once per process (a Lambda cold start, or `face-dedup serve`)."""
    global _deps  # the resolver is module level; so are its dependencies
    _deps = dependencies


def _dependencies() -> Dependencies:
    if _deps is None:
        raise RuntimeError("the review API is not configured")
    return _deps


def _caller() -> Caller:
    context = app.current_event.raw_event.get("requestContext") or {}
    return caller_from_claims((context.get("authorizer") or {}).get("claims"))


def _require(caller: Caller, *roles: Role) -> None:
    if caller.actor.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDenied(
            f"{caller.actor.name} is {caller.actor.role.value}: only {allowed} may do this"
        )


def _service(caller: Caller) -> DedupService:
    return _dependencies().service.for_tenant(caller.tenant)


def _error(status: int, message: str) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps({"error": message})
    )


@app.exception_handler(Unauthorized)
def _unauthorized(exc: Unauthorized) -> Response[str]:
    return _error(401, str(exc))


@app.exception_handler(PermissionDenied)
def _forbidden(exc: PermissionDenied) -> Response[str]:
    return _error(403, str(exc))


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response[str]:
    return _error(404, str(exc))


@app.exception_handler(InvalidState)
def _conflict(exc: InvalidState) -> Response[str]:
    return _error(409, str(exc))


class NotAvailableHere(Exception):
    """A route this deployment does not offer (e.g. presigned uploads on one machine)."""


@app.exception_handler(NotAvailableHere)
def _not_here(exc: NotAvailableHere) -> Response[str]:
    return _error(501, str(exc))


@app.exception_handler(ValueError)
def _bad_request(exc: ValueError) -> Response[str]:
    return _error(400, str(exc))


# -- models --------------------------------------------------------------------------------------

READERS = (Role.OFFICER, Role.SUPERVISOR, Role.AUDITOR)
DECIDERS = (Role.OFFICER, Role.SUPERVISOR)


class DecisionBody(BaseModel):
    decision: Literal["same_person", "different_people", "cannot_tell"]
    comment: str = Field(default="", max_length=2000)
    matched_record_id: str | None = Field(default=None, max_length=64)


class ConfirmationBody(BaseModel):
    confirm: bool
    comment: str = Field(default="", max_length=2000)


class VerifyBody(BaseModel):
    first_image_base64: str = Field(max_length=35_000_000)
    second_image_base64: str = Field(max_length=35_000_000)


class UploadBody(BaseModel):
    application_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    content_type: Literal["image/jpeg", "image/png", "image/heic", "image/heif", "image/webp"] = "image/jpeg"


def _summary(case: Case) -> dict[str, Any]:
    best = case.candidates[0] if case.candidates else None
    return {
        "case_id": case.case_id,
        "kind": case.kind.value,
        "status": case.status.value,
        "escalated": case.escalated,
        "claimed_by": case.claimed_by,
        "created_at": case.created_at,
        "candidates": len(case.candidates),
        "best_score": None if best is None else round(best.score, 4),
    }


def _image_link(service: DedupService, key: str) -> str:
    deps = _dependencies()
    presigned = service.blobs.presigned_url(key, deps.signer.ttl_seconds)
    return presigned or f"/images/{deps.signer.token(key, service.tenant)}"


def _person(service: DedupService, record_id: str, score: float | None) -> dict[str, Any]:
    record = service.store.get_record(record_id)
    if record is None:
        return {"record_id": record_id, "erased": True}
    entry: dict[str, Any] = {
        "record_id": record.record_id,
        "application_id": record.application_id,
        "channel": "selfie" if record.source.startswith("selfies/") else "registry import",
        "status": record.status.value,
        "enrolled_at": record.created_at,
        "quality": record.quality,
        "crop_url": _image_link(service, crop_key(service.tenant, record.record_id)),
        "photo_url": _image_link(service, photo_key(service.tenant, record.record_id)),
    }
    if score is not None:
        fmr = service.tail.fmr_at(score)
        entry |= {
            "score": round(score, 4),
            # What the score means: how often two different people score this high.
            "false_match_rate": fmr,
            "beyond_calibration": fmr < service.tail.measured_min_fmr,
        }
    return entry


def _detail(service: DedupService, case: Case) -> dict[str, Any]:
    return {
        **_summary(case),
        "probe": _person(service, case.probe_record_id, None),
        "candidates": [_person(service, c.record_id, c.score) for c in case.candidates],
        "thresholds": case.thresholds,
        "decision": case.decision.value if case.decision else None,
        "decided_by": case.decided_by,
        "matched_record_id": case.matched_record_id,
        "confirmed_by": case.confirmed_by,
        "history": list(case.history),
        "version": case.version,
    }


# -- routes --------------------------------------------------------------------------------------


@app.get("/cases", summary="List cases", tags=["cases"])
def list_cases(
    status: Annotated[Literal["open", "awaiting_confirmation", "closed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    older_than_hours: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *READERS)
    service = _service(caller)
    cases = service.store.list_cases(tenant=caller.tenant, status=status, limit=limit + 1, offset=offset)
    if older_than_hours is not None:
        cutoff = (datetime.now(UTC) - timedelta(hours=older_than_hours)).isoformat()
        cases = [c for c in cases if c.created_at <= cutoff]
    page = cases[:limit]
    return {
        "cases": [_summary(c) for c in page],
        "next_offset": offset + limit if len(cases) > limit else None,
    }


@app.get("/cases/<case_id>", summary="Show a case: probe, ranked candidates, scores, history", tags=["cases"])
def show_case(case_id: str) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *READERS)
    service = _service(caller)
    case = service.store.get_case(case_id)
    if case is None or case.tenant != caller.tenant:
        raise NotFound(f"no case {case_id}")
    service.record_event("case.viewed", caller.actor.name, case_id=case_id, role=caller.actor.role.value)
    return _detail(service, case)


@app.post("/cases/<case_id>/claim", summary="Claim a case for review", tags=["cases"])
def claim_case(case_id: str) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    return _detail(service, service.claim_case(case_id, caller.actor))


@app.post(
    "/cases/<case_id>/decision",
    summary="Decide: same person, different people, or cannot tell",
    tags=["cases"],
)
def decide_case(case_id: str, body: DecisionBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    case = service.decide_case(
        case_id, CaseDecision(body.decision), caller.actor, body.comment, body.matched_record_id
    )
    return _detail(service, case)


@app.post(
    "/cases/<case_id>/confirmation",
    summary="Confirm or overturn (a second person, supervisor)",
    tags=["cases"],
)
def confirm_case(case_id: str, body: ConfirmationBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.SUPERVISOR)
    service = _service(caller)
    return _detail(service, service.confirm_case(case_id, caller.actor, body.confirm, body.comment))


@app.post("/verify", summary="1:1 verification of two photos", tags=["verification"])
def verify(body: VerifyBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN)
    try:
        first = base64.b64decode(body.first_image_base64, validate=True)
        second = base64.b64decode(body.second_image_base64, validate=True)
    except ValueError:
        raise ValueError("images must be base64") from None
    result = _service(caller).verify(first, second, actor=caller.actor.name)
    return {
        "match": result.match,
        "score": result.score,
        "threshold": result.threshold,
        "fmr": result.fmr,
        "model_pack": result.model_pack,
        "rejected": [{"which": w, "reason": r, "message": m} for w, r, m in result.rejected],
    }


@app.post("/uploads", summary="A presigned upload URL for the mobile channel", tags=["verification"])
def upload_url(body: UploadBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN)
    uploads = _dependencies().uploads
    extension = body.content_type.split("/")[1].replace("jpeg", "jpg")
    key = f"selfies/{caller.tenant}/{body.application_id}/{uuid.uuid4().hex}.{extension}"
    url = uploads.presigned_upload(key, body.content_type, 300) if uploads is not None else None
    if url is None:
        raise NotAvailableHere("uploads are not available here: use `face-dedup import` on this machine")
    return {"url": url, "key": key, "expires_in": 300, "method": "PUT", "content_type": body.content_type}


@app.delete("/records/<record_id>", summary="Erase a record (supervisor only)", tags=["records"])
def erase_record(
    record_id: str, reason: Annotated[str, Query(min_length=3, max_length=500)]
) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.SUPERVISOR)
    return _service(caller).erase(record_id, caller.actor.name, reason)


@app.get("/audit", summary="The audit log as JSON Lines (auditors)", tags=["audit"])
def audit_export() -> Response[str]:
    caller = _caller()
    _require(caller, Role.AUDITOR, Role.ADMIN)
    events = _service(caller).store.audit_events(tenant=caller.tenant)
    body = "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in events)
    return Response(status_code=200, content_type="application/x-ndjson", body=body)


@app.get(
    "/images/<token>",
    summary="A face image behind a short-lived signed link",
    tags=["records"],
    include_in_schema=False,
)
def image(token: str):  # type: ignore[no-untyped-def]  # an annotated return makes Powertools text-encode the bytes
    caller = _caller()
    _require(caller, *READERS)
    service = _service(caller)
    key = _dependencies().signer.verify(token, caller.tenant)
    data = service.blobs.get(key)
    if not data.startswith(b"\x89PNG"):  # an original upload (maybe HEIC): show a safe JPEG copy
        data, kind = _display_jpeg(data), "image/jpeg"
    else:
        kind = "image/png"
    return Response(
        status_code=200,
        content_type=kind,
        body=data,
        headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"},
    )


def _display_jpeg(data: bytes) -> bytes:
    import io

    from PIL import Image

    from face_dedup.vision.decode import decode_image

    picture = Image.fromarray(decode_image(data).rgb)
    picture.thumbnail((800, 800))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=app.get_openapi_json_schema()
    )


@app.get("/", include_in_schema=False)
def console() -> Response[str]:
    page = resources.files("face_dedup_api").joinpath("static/console.html").read_text(encoding="utf-8")
    return Response(
        status_code=200,
        content_type="text/html; charset=utf-8",
        body=page,
        headers={
            # blob: for images fetched with the caller's token; https: for presigned S3 links
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: https:; "
            "connect-src 'self' https:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"
        },
    )
