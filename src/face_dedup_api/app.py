"""The review API: one Powertools REST resolver, served by API Gateway (functions/api) and by
`face-dedup serve`. Every route resolves the caller (role, tenant) first; the service it
calls is that tenant's, so tenant B's ids do not exist for tenant A. Face images never appear
in list responses: a case's detail carries short-lived links only."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field, model_validator

from face_dedup.blob_keys import crop_key, photo_key
from face_dedup.domain import (
    CLAIM_MINUTES,
    UNDO_MINUTES,
    Case,
    CaseDecision,
    CaseStatus,
    Role,
    claim_holder,
    claimed_at,
)
from face_dedup.errors import ErasureIncomplete, InvalidState, NotFound, PermissionDenied, StorageError
from face_dedup.identifiers import APPLICATION_ID_PATTERN
from face_dedup.ports import BlobStore
from face_dedup.queries import RegistryQueries, TenantReader
from face_dedup.record_templates import TemplateRefused, TemplateSource
from face_dedup.service import DedupService
from face_dedup_api.auth import Caller, Unauthorized, caller_from_claims
from face_dedup_api.denials import PER_MINUTE, AnonymousDenials
from face_dedup_api.images import ImageSigner

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Every response, whatever route or error produced it: never cached (case data and faces), never
# sniffed into another type, never framed. The console page replaces the CSP with its own.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


class ReviewResolver(APIGatewayRestResolver):
    """The Powertools resolver, with SECURITY_HEADERS on every response it produces (routes,
    exception handlers, validation errors and unknown routes alike)."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        response = super().resolve(event, context)
        headers = response.setdefault("multiValueHeaders", {})
        single = response.get("headers") or {}
        for name, value in SECURITY_HEADERS.items():
            if name not in headers and name not in single:  # a route's own value wins (the console's CSP)
                headers[name] = [value]
        return response


app = ReviewResolver(enable_validation=True)
app.configure_openapi(
    title="face-dedup review API",
    version="1.0.0",
    summary="Cases of possible duplicate enrollments, for case officers, supervisors and auditors.",
)


_ORIGIN = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


@dataclass
class Dependencies:
    service: DedupService
    signer: ImageSigner
    queries: RegistryQueries  # every read (cases, records, audit, images): tenant and role checked there
    uploads: BlobStore | None = None  # the uploads bucket (cloud); None locally
    # Where the console may call the API and load faces from, besides its own origin: the API's
    # origin when the page is served elsewhere, the image bucket's origin for presigned links.
    api_origin: str | None = None
    image_origins: tuple[str, ...] = ()
    # Refusals of callers without an identity audited one by one per minute (denials.py).
    anonymous_denials: AnonymousDenials = field(default_factory=AnonymousDenials)

    def __post_init__(self) -> None:
        for origin in (self.api_origin, *self.image_origins):
            if origin is not None and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"not an https origin: {origin!r}")

    def _presigned_origin(self) -> list[str]:
        """Where presigned image links point (the bucket's endpoint), learned by presigning a
        dummy key: signing is local, nothing is fetched. Empty where images are served here."""
        url = self.queries.presigns_images()
        if not url:
            return []
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        return [origin] if _ORIGIN.fullmatch(origin) and origin not in self.image_origins else []

    def console_csp(self) -> str:
        """No inline script or style anywhere: the page's code and styles are files from 'self'."""
        connect = " ".join(["'self'", *([self.api_origin] if self.api_origin else [])])
        images = " ".join(["'self'", "blob:", *self.image_origins, *self._presigned_origin()])
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src {images}; connect-src {connect}; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )


_deps: Dependencies | None = None


def configure(dependencies: Dependencies) -> None:
    """Set once per process (a Lambda cold start, or `face-dedup serve`)."""
    global _deps  # the resolver is module level; so are its dependencies
    _deps = dependencies


def _dependencies() -> Dependencies:
    if _deps is None:
        raise RuntimeError("the review API is not configured")
    return _deps


def _claims() -> dict[str, Any] | None:
    context = app.current_event.raw_event.get("requestContext") or {}
    claims = (context.get("authorizer") or {}).get("claims")
    return claims if isinstance(claims, dict) else None


def _caller() -> Caller:
    return caller_from_claims(_claims())


def _require(caller: Caller, *roles: Role) -> None:
    if caller.actor.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDenied(
            f"{caller.actor.name} is {caller.actor.role.value}: only {allowed} may do this"
        )


def _service(caller: Caller) -> DedupService:
    return _dependencies().service.for_tenant(caller.tenant)


def _reader(caller: Caller) -> TenantReader:
    """The caller's reads: only its tenant's data, only what its role may see (queries.py)."""
    return _dependencies().queries.reader(caller.actor, caller.tenant)


def audit_denied(
    method: str, path: str, status: int, reason: str, claims: dict[str, Any] | None = None
) -> None:
    """Every refused request leaves an audit entry: who (if known), what, why; never a token or a
    body. In the caller's tenant when the identity names one, else the service's own."""
    deps = _deps
    if deps is None:
        return
    try:
        caller: Caller | None = caller_from_claims(claims)
    except Unauthorized:
        caller = None
    service = deps.service
    if caller is not None:
        try:
            service = service.for_tenant(caller.tenant)
        except ValueError:
            caller = None
    if caller is None:  # anyone can be refused: one by one up to a budget, then counted (denials.py)
        record, unrecorded = deps.anonymous_denials.take()
        if unrecorded:
            service.record_event(
                "request.denied.unrecorded",
                "anonymous",
                count=unrecorded,
                reason=f"over {PER_MINUTE} refusals without a valid identity in a minute",
            )
        if not record:
            return
    service.record_event(
        "request.denied",
        caller.actor.name if caller else "anonymous",
        role=caller.actor.role.value if caller else None,
        method=method[:10],
        path=path[:200],
        status=status,
        reason=reason[:300],
    )


def _error(status: int, message: str, **extra: Any) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": message, **extra}),
    )


def _denied(status: int, message: str) -> Response[str]:
    event = app.current_event
    audit_denied(event.http_method, event.path, status, message, _claims())
    return _error(status, message)


@app.exception_handler(Unauthorized)
def _unauthorized(exc: Unauthorized) -> Response[str]:
    return _denied(401, str(exc))


@app.exception_handler(PermissionDenied)
def _forbidden(exc: PermissionDenied) -> Response[str]:
    return _denied(403, str(exc))


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response[str]:
    return _denied(404, str(exc))  # another tenant's id is "not found" too: audited alike


@app.not_found
def _no_route(exc: Exception) -> Response[str]:
    return _denied(404, "no such route")


@app.exception_handler(InvalidState)
def _conflict(exc: InvalidState) -> Response[str]:
    return _error(409, str(exc))


@app.exception_handler(ErasureIncomplete)
def _erasure_incomplete(exc: ErasureIncomplete) -> Response[str]:
    # erased, but the scan found a copy (record id and file names only): never a success
    return _error(503, str(exc))


@app.exception_handler(StorageError)
def _storage_failed(exc: StorageError) -> Response[str]:
    # one machine's files (disk full, damage...): the operator's console shows it, with the fix
    return _error(503, str(exc))


class NotAvailableHere(Exception):
    """A route this deployment does not offer (e.g. presigned uploads on one machine)."""


@app.exception_handler(NotAvailableHere)
def _not_here(exc: NotAvailableHere) -> Response[str]:
    return _error(501, str(exc))


@app.exception_handler(ValueError)
def _bad_request(exc: ValueError) -> Response[str]:
    return _error(400, str(exc))


@app.exception_handler(RequestValidationError)
def _invalid(exc: RequestValidationError) -> Response[str]:
    """A sentence a person can act on ("comment: at most 2000 characters"), plus the fields."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        problems.append({"field": where or "request", "message": str(error.get("msg", "invalid"))})
    sentence = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5]) or "invalid request"
    return _error(422, sentence, problems=problems[:20])


# -- models --------------------------------------------------------------------------------------

DECIDERS = (Role.OFFICER, Role.SUPERVISOR)
RECORD_ID = r"^[A-Za-z0-9_-]{1,64}$"


class DecisionBody(BaseModel):
    decision: Literal["same_person", "different_people", "cannot_tell"]
    comment: str = Field(default="", max_length=2000)
    # "Same person" must say which candidate it is the same person as: never a silent default.
    matched_record_id: str | None = Field(default=None, pattern=RECORD_ID)

    @model_validator(mode="after")
    def _names_the_candidate(self) -> DecisionBody:
        if self.decision == "same_person" and not self.matched_record_id:
            raise ValueError("a same-person decision names the candidate it matches (matched_record_id)")
        return self


class ConfirmationBody(BaseModel):
    confirm: bool
    comment: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _overturn_says_why(self) -> ConfirmationBody:
        if not self.confirm and not self.comment.strip():
            raise ValueError("an overturn needs a reason (comment)")
        return self


ImageType = Literal["image/jpeg", "image/png", "image/heic", "image/heif", "image/webp"]
# 1:1 verify in the cloud: photos go to the uploads bucket by presigned POST (the firewall admits
# request bodies up to 8 KB, API Gateway 10 MB, Lambda 6 MB), then `POST /verify` names the upload.
VERIFY_PREFIX = "verify/"  # not an ingest trigger prefix (selfies/, imports/); expires in a day
VERIFY_UPLOAD_TTL = 300
UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"


class VerifyBody(BaseModel):
    """Either both photos inline (the local server) or the id of a `POST /verify/uploads` pair."""

    first_image_base64: str | None = Field(default=None, max_length=35_000_000)
    second_image_base64: str | None = Field(default=None, max_length=35_000_000)
    upload_id: str | None = Field(default=None, pattern=UPLOAD_ID_PATTERN)

    @model_validator(mode="after")
    def _one_way(self) -> VerifyBody:
        inline = self.first_image_base64 is not None and self.second_image_base64 is not None
        if inline == (self.upload_id is not None):
            raise ValueError("send either both photos (base64) or the upload_id of POST /verify/uploads")
        return self


class VerifyUploadsBody(BaseModel):
    first_content_type: ImageType = "image/jpeg"
    second_content_type: ImageType = "image/jpeg"


class UploadBody(BaseModel):
    application_id: str = Field(pattern=APPLICATION_ID_PATTERN)  # the one rule (identifiers.py)
    content_type: Literal["image/jpeg", "image/png", "image/heic", "image/heif", "image/webp"] = "image/jpeg"


def _outcome(case: Case) -> str | None:
    """What a closed case came to, in the words the console shows."""
    if case.status is not CaseStatus.CLOSED:
        return None
    if case.decision is CaseDecision.SAME_PERSON:
        return "confirmed_same_person" if case.confirmed_by else "same_person"
    return case.decision.value if case.decision else "closed"


def _summary(case: Case, reader: TenantReader | None = None) -> dict[str, Any]:
    best = case.candidates[0] if case.candidates else None
    summary: dict[str, Any] = {
        "case_id": case.case_id,
        "kind": case.kind.value,
        "status": case.status.value,
        "escalated": case.escalated,
        "claimed_by": claim_holder(case),
        "claimed_at": claimed_at(case) if claim_holder(case) else None,
        "decided_by": case.decided_by,
        "outcome": _outcome(case),
        "created_at": case.created_at,
        "candidates": len(case.candidates),
        "best_score": None if best is None else round(best.score, 4),
    }
    if reader is not None:
        record = reader.record(case.probe_record_id)
        summary["application_id"] = record.application_id if record else None
        summary["channel"] = _channel(record.source) if record else None
        if best is not None:
            summary["best_band"] = score_band(best.score, case.thresholds)
    return summary


def _channel(source: str) -> str:
    return "selfie" if source.startswith("selfies/") else "registry import"


def score_band(score: float, thresholds: dict[str, Any]) -> str:
    """The score in plain words, relative to this case's own thresholds (see README)."""
    review = float(thresholds.get("review") or 0)
    duplicate = float(thresholds.get("duplicate") or review)
    if score >= duplicate + 0.1:
        return "far_above"
    if score >= duplicate:
        return "above"
    if score >= review + 0.03:
        return "between"
    return "near_threshold"


def _image_link(reader: TenantReader, key: str) -> str:
    deps = _dependencies()
    presigned = reader.image_url(key, deps.signer.ttl_seconds)
    return presigned or f"/images/{deps.signer.token(key, reader.tenant)}"


def _person(
    service: DedupService,
    reader: TenantReader,
    record_id: str,
    score: float | None,
    thresholds: dict[str, Any],
) -> dict[str, Any]:
    record = reader.record(record_id)
    if record is None:
        return {"record_id": record_id, "erased": True}
    entry: dict[str, Any] = {
        "record_id": record.record_id,
        "application_id": record.application_id,
        "channel": _channel(record.source),
        "source_name": record.source.rsplit("/", 1)[-1][:200],
        "status": record.status.value,
        "enrolled_at": record.created_at,
        "quality": record.quality,
        "crop_url": _image_link(reader, crop_key(reader.tenant, record.record_id)),
        "photo_url": _image_link(reader, photo_key(reader.tenant, record.record_id)),
    }
    if score is not None:
        fmr = service.tail.fmr_at(score)
        entry |= {
            "score": round(score, 4),
            "band": score_band(score, thresholds),
            # What the score means: how often two different people score this high.
            "false_match_rate": fmr,
            "beyond_calibration": fmr < service.tail.measured_min_fmr,
        }
    return entry


def _detail(service: DedupService, reader: TenantReader, case: Case) -> dict[str, Any]:
    return {
        **_summary(case, reader),
        "probe": _person(service, reader, case.probe_record_id, None, case.thresholds),
        "candidates": [
            _person(service, reader, c.record_id, c.score, case.thresholds) for c in case.candidates
        ],
        "candidates_count": len(case.candidates),
        "thresholds": case.thresholds,
        "decision": case.decision.value if case.decision else None,
        "decided_at": case.decided_at,
        "matched_record_id": case.matched_record_id,
        "confirmed_by": case.confirmed_by,
        "claim_minutes": CLAIM_MINUTES,
        "undo_minutes": UNDO_MINUTES,
        "history": list(case.history),
        "version": case.version,
    }


# -- routes --------------------------------------------------------------------------------------


@app.get("/me", summary="Who the caller is: name, role, tenant", tags=["session"])
def whoami() -> dict[str, Any]:
    caller = _caller()
    return {"name": caller.actor.name, "role": caller.actor.role.value, "tenant": caller.tenant}


SORTS = {
    "oldest": (lambda c: (c.created_at, c.case_id), False),
    "newest": (lambda c: (c.created_at, c.case_id), True),
    "score": (lambda c: (c.candidates[0].score if c.candidates else 0.0, c.case_id), True),
}


@app.get("/cases", summary="List cases: filters, sorting, paging with a total", tags=["cases"])
def list_cases(
    status: Annotated[Literal["open", "awaiting_confirmation", "closed"] | None, Query()] = None,
    escalated: Annotated[bool | None, Query()] = None,
    mine: Annotated[bool, Query()] = False,
    sort: Annotated[Literal["oldest", "newest", "score"], Query()] = "oldest",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
    older_than_hours: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> dict[str, Any]:
    caller = _caller()
    reader = _reader(caller)
    cases = reader.all_cases(status)
    if escalated is not None:
        cases = [c for c in cases if c.escalated == escalated]
    if mine:
        me = caller.actor.name
        cases = [c for c in cases if me in (claim_holder(c), c.decided_by, c.confirmed_by)]
    if older_than_hours is not None:
        cutoff = (datetime.now(UTC) - timedelta(hours=older_than_hours)).isoformat()
        cases = [c for c in cases if c.created_at <= cutoff]
    key, reverse = SORTS[sort]
    cases.sort(key=key, reverse=reverse)
    page = cases[offset : offset + limit]
    return {
        "cases": [_summary(c, reader) for c in page],
        "total": len(cases),  # after the filters: what "n of total" means in the queue
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if offset + limit < len(cases) else None,
    }


@app.get("/cases/<case_id>", summary="Show a case: probe, ranked candidates, scores, history", tags=["cases"])
def show_case(case_id: str) -> dict[str, Any]:
    caller = _caller()
    reader = _reader(caller)
    case = reader.case(case_id)
    service = _service(caller)
    service.record_event("case.viewed", caller.actor.name, case_id=case_id, role=caller.actor.role.value)
    return _detail(service, reader, case)


@app.post("/cases/<case_id>/claim", summary="Claim a case for review", tags=["cases"])
def claim_case(case_id: str) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    return _detail(service, _reader(caller), service.claim_case(case_id, caller.actor))


@app.post(
    "/cases/<case_id>/release",
    summary="Release a claim (its holder, or a supervisor)",
    tags=["cases"],
)
def release_case(case_id: str) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    return _detail(service, _reader(caller), service.release_case(case_id, caller.actor))


@app.post(
    "/cases/<case_id>/decision",
    summary="Decide: same person (naming the candidate), different people, or cannot tell",
    tags=["cases"],
)
def decide_case(case_id: str, body: DecisionBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    case = service.decide_case(
        case_id, CaseDecision(body.decision), caller.actor, body.comment, body.matched_record_id
    )
    return _detail(service, _reader(caller), case)


@app.post(
    "/cases/<case_id>/undo",
    summary="Take back your own decision within the undo window, while it is not final",
    tags=["cases"],
)
def undo_decision(case_id: str) -> dict[str, Any]:
    caller = _caller()
    _require(caller, *DECIDERS)
    service = _service(caller)
    return _detail(service, _reader(caller), service.undo_decision(case_id, caller.actor))


@app.post(
    "/cases/<case_id>/confirmation",
    summary="Confirm or overturn (a second person, supervisor; an overturn says why)",
    tags=["cases"],
)
def confirm_case(case_id: str, body: ConfirmationBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.SUPERVISOR)
    service = _service(caller)
    return _detail(
        service, _reader(caller), service.confirm_case(case_id, caller.actor, body.confirm, body.comment)
    )


@app.post("/verify", summary="1:1 verification of two photos", tags=["verification"])
def verify(body: VerifyBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN)
    if body.upload_id is not None:
        first, second = _uploaded_pair(caller, body.upload_id)
    elif _dependencies().uploads is not None:
        raise NotAvailableHere(
            "here photos travel by upload: POST /verify/uploads, then POST /verify with its upload_id"
        )
    else:
        try:
            first = base64.b64decode(body.first_image_base64 or "", validate=True)
            second = base64.b64decode(body.second_image_base64 or "", validate=True)
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


def _verify_prefix(caller: Caller, upload_id: str) -> str:
    return f"{VERIFY_PREFIX}{caller.tenant}/{upload_id}/"


@app.post(
    "/verify/uploads",
    summary="Two presigned uploads (form POST) for the photos of a 1:1 verification",
    tags=["verification"],
)
def verify_uploads(body: VerifyUploadsBody) -> dict[str, Any]:
    caller = _caller()
    _require(caller, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN)
    uploads = _dependencies().uploads
    limit = _service(caller).config.max_input_bytes  # the photo limit every channel has
    upload_id = uuid.uuid4().hex
    grants = []
    for which, content_type in (("first", body.first_content_type), ("second", body.second_content_type)):
        key = _verify_prefix(caller, upload_id) + which
        post = uploads.presigned_post(key, content_type, limit, VERIFY_UPLOAD_TTL) if uploads else None
        if post is None:
            raise NotAvailableHere("uploads are not available here: send both photos in POST /verify's body")
        grants.append({"which": which, "content_type": content_type, **post})
    return {"upload_id": upload_id, "uploads": grants, "max_bytes": limit, "expires_in": VERIFY_UPLOAD_TTL}


def _uploaded_pair(caller: Caller, upload_id: str) -> tuple[bytes, bytes]:
    """The two photos of an upload, read once and deleted whatever the outcome (every version:
    the bucket is versioned); a lifecycle rule removes pairs that are never verified."""
    uploads = _dependencies().uploads
    if uploads is None:
        raise NotAvailableHere("uploads are not available here: send both photos in POST /verify's body")
    prefix = _verify_prefix(caller, upload_id)
    limit = _service(caller).config.max_input_bytes
    try:
        photos = []
        for which in ("first", "second"):
            try:
                data = uploads.get(prefix + which)
            except NotFound:
                raise NotFound(f"no {which} photo uploaded for this upload_id (or it expired)") from None
            if len(data) > limit:  # the presigned policy already refuses it; a second guard
                raise ValueError(f"the {which} photo has {len(data)} bytes; the limit is {limit}")
            photos.append(data)
        return photos[0], photos[1]
    finally:
        uploads.delete_prefix(prefix)


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


class PhotoBody(BaseModel):
    """A later photo of a record's person: inline (the local server) or the `first` photo of a
    `POST /verify/uploads` pair (the cloud, whose firewall admits small bodies only)."""

    image_base64: str | None = Field(default=None, max_length=35_000_000)
    upload_id: str | None = Field(default=None, pattern=UPLOAD_ID_PATTERN)
    source: Literal["verified", "renewal"] = "verified"
    captured_at: date | None = None  # when the photo was taken (ISO 8601 date)

    @model_validator(mode="after")
    def _one_way(self) -> PhotoBody:
        if (self.image_base64 is None) == (self.upload_id is None):
            raise ValueError("send either the photo (image_base64) or the upload_id of POST /verify/uploads")
        return self


@app.exception_handler(TemplateRefused)
def _template_refused(exc: TemplateRefused) -> Response[str]:
    return _error(422, exc.message, reason=exc.reason)


@app.post(
    "/records/<record_id>/photos",
    summary="Add a later photo to a record (officer or supervisor): several templates per record",
    tags=["records"],
)
def add_record_photo(record_id: str, body: PhotoBody) -> dict[str, Any]:
    """Only a photo that matches the record 1:1 at the verify threshold, reaches the quality
    floor and matches no other record; refused otherwise (422 with a reason code)."""
    from face_dedup.add_template import add_photo

    caller = _caller()
    _require(caller, *DECIDERS)
    if not re.fullmatch(RECORD_ID, record_id):
        raise NotFound("no such record")
    if body.upload_id is not None:
        data = _uploaded_first(caller, body.upload_id)
    elif _dependencies().uploads is not None:
        raise NotAvailableHere("here photos travel by upload: POST /verify/uploads, then send its upload_id")
    else:
        try:
            data = base64.b64decode(body.image_base64 or "", validate=True)
        except ValueError:
            raise ValueError("image_base64 must be base64") from None
    added = add_photo(
        _service(caller),
        record_id,
        data,
        caller.actor,
        source=TemplateSource(body.source),
        captured_at=body.captured_at.isoformat() if body.captured_at else None,
    )
    return added.as_dict()


def _uploaded_first(caller: Caller, upload_id: str) -> bytes:
    """The `first` photo of an upload pair, read once; the pair is deleted whatever happens."""
    uploads = _dependencies().uploads
    if uploads is None:
        raise NotAvailableHere("uploads are not available here: send the photo as image_base64")
    prefix = _verify_prefix(caller, upload_id)
    try:
        try:
            data = uploads.get(prefix + "first")
        except NotFound:
            raise NotFound("no first photo uploaded for this upload_id (or it expired)") from None
        limit = _service(caller).config.max_input_bytes
        if len(data) > limit:
            raise ValueError(f"the photo has {len(data)} bytes; the limit is {limit}")
        return data
    finally:
        uploads.delete_prefix(prefix)


@app.get("/audit", summary="The audit log as JSON Lines (auditors)", tags=["audit"])
def audit_export() -> Response[str]:
    caller = _caller()
    events = _reader(caller).audit_events()
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
    reader = _reader(caller)
    key = _dependencies().signer.verify(token, reader.tenant)
    data = reader.image(key)
    if not data.startswith(b"\x89PNG"):  # an original upload (maybe HEIC): show a safe JPEG copy
        data, kind = _display_jpeg(data), "image/jpeg"
    else:
        kind = "image/png"
    return Response(
        status_code=200,
        content_type=kind,
        body=data,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
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


STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "signin.js": "text/javascript; charset=utf-8",  # the cloud's hosted-UI sign-in (idle locally)
    "console.css": "text/css; charset=utf-8",
}


def _static(name: str) -> str:
    return resources.files("face_dedup_api").joinpath(f"static/{name}").read_text(encoding="utf-8")


@app.get("/", include_in_schema=False)
def console() -> Response[str]:
    return Response(
        status_code=200,
        content_type="text/html; charset=utf-8",
        body=_static("console.html"),
        headers={"Content-Security-Policy": _dependencies().console_csp()},
    )


@app.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response[str]:
    return Response(status_code=204, content_type="image/x-icon", body="")


@app.get("/static/<name>", include_in_schema=False)
def static_file(name: str) -> Response[str]:
    """The console's script and styles: a fixed list, never a path from the request."""
    kind = STATIC.get(name)
    if kind is None:
        raise NotFound("no such file")
    return Response(status_code=200, content_type=kind, body=_static(name))


# The selfie capture page's routes register on this resolver (capture.py imports it).
from face_dedup_api import capture as _capture  # noqa: E402, F401
