"""MOSIP ABIS messages (API spec 0.9, message version "1.1"): request validation and replies.

Every request is hostile until validated here: it becomes a typed `AbisRequest` or raises
`AbisFailure` with one of MOSIP's failure reasons, carrying whatever `id` and `requestId` could
be read so the reply can still be matched. Replies follow the spec and the conformance kit's
schemas: every value a string, only the keys the spec names, no nulls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from face_dedup.identifiers import is_application_id

VERSION = "1.1"
INSERT = "mosip.abis.insert"
IDENTIFY = "mosip.abis.identify"
DELETE = "mosip.abis.delete"
PING = "mosip.abis.ping"
PENDING_JOBS = "mosip.abis.pendingJobs"
REFERENCE_COUNT = "mosip.abis.referenceCount"
OPERATIONS = (INSERT, IDENTIFY, DELETE, PING, PENDING_JOBS, REFERENCE_COUNT)

SUCCESS, FAILED = "1", "2"
MAX_MESSAGE_BYTES = 1 << 20  # a request is a few hundred bytes; a gallery of ~10,000 ids fits
MAX_GALLERY = 10_000
_COMMON = ("id", "version", "requestId", "requesttime")
_ALLOWED_KEYS = {
    INSERT: {*_COMMON, "referenceId", "referenceURL"},
    IDENTIFY: {*_COMMON, "referenceId", "referenceURL", "flags", "gallery"},
    DELETE: {*_COMMON, "referenceId"},
    PING: set(_COMMON),
    PENDING_JOBS: set(_COMMON),
    REFERENCE_COUNT: set(_COMMON),
}
# ISO 8601 in UTC, milliseconds optional (MOSIP sends them; its docs show both forms).
_REQUEST_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class FailureReason(IntEnum):
    """MOSIP's failure reasons. Never renumber: MOSIP's registration processor acts on them."""

    INTERNAL_ERROR = 1
    ABORTED = 2
    UNEXPECTED_ERROR = 3
    INVALID_REQUEST_STRUCTURE = 4
    MISSING_REFERENCE_ID = 5
    MISSING_REQUEST_ID = 6
    UNABLE_TO_FETCH_BIOMETRICS = 7
    MISSING_REFERENCE_URL = 8
    MISSING_REQUEST_TIME = 9
    REFERENCE_ID_EXISTS = 10
    CBEFF_HAS_NO_DATA = 11
    REFERENCE_ID_NOT_FOUND = 12
    INVALID_VERSION = 13
    INVALID_ID = 14
    INVALID_REQUEST_TIME_FORMAT = 15
    INVALID_CBEFF_FORMAT = 16
    DATASHARE_URL_EXPIRED = 17
    QUALITY_CHECK_FAILED = 18


class AbisFailure(Exception):
    """A request that gets a failure reply. `detail` is for our logs and audit, never biometric."""

    def __init__(self, reason: FailureReason, detail: str, *, op_id: str = "", request_id: str = "") -> None:
        super().__init__(f"failure {int(reason)} ({reason.name}): {detail}")
        self.reason = reason
        self.detail = detail
        self.op_id = op_id
        self.request_id = request_id


@dataclass(frozen=True)
class AbisRequest:
    op_id: str
    request_id: str
    request_time: str
    reference_id: str = ""
    reference_url: str = ""
    gallery: tuple[str, ...] | None = None  # None or empty: the whole database
    flags: dict[str, str] = field(default_factory=dict)


def parse_request(body: bytes | str) -> AbisRequest:
    """Validate one message body, in the order MOSIP's own mock checks (so the same bad request
    gets the same reason from either): structure, id, version, requestId, requesttime, ids."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > MAX_MESSAGE_BYTES:
        raise AbisFailure(FailureReason.INVALID_REQUEST_STRUCTURE, f"message of {len(raw)} bytes")
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd numbers, absurd nesting
        raise AbisFailure(FailureReason.INVALID_REQUEST_STRUCTURE, "not a JSON document") from None
    if not isinstance(msg, dict):
        raise AbisFailure(FailureReason.INVALID_REQUEST_STRUCTURE, "not a JSON object")
    op_id = _echo(msg.get("id"))
    request_id = _echo(msg.get("requestId"))

    def fail(reason: FailureReason, detail: str) -> AbisFailure:
        return AbisFailure(reason, detail, op_id=op_id, request_id=request_id)

    if msg.get("id") not in OPERATIONS:
        raise fail(FailureReason.INVALID_ID, "unknown operation id")
    if msg.get("version") != VERSION:
        raise fail(FailureReason.INVALID_VERSION, f"version must be {VERSION!r}")
    if _blank(msg.get("requestId")):
        raise fail(FailureReason.MISSING_REQUEST_ID, "no requestId")
    if not isinstance(msg["requestId"], str) or not _REQUEST_ID.fullmatch(msg["requestId"]):
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "requestId is not an identifier")
    if _blank(msg.get("requesttime")):
        raise fail(FailureReason.MISSING_REQUEST_TIME, "no requesttime")
    if not _valid_time(msg["requesttime"]):
        raise fail(FailureReason.INVALID_REQUEST_TIME_FORMAT, "requesttime is not ISO 8601 UTC")
    extra = set(msg) - _ALLOWED_KEYS[op_id]
    if extra:
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, f"{len(extra)} unexpected key(s)")
    reference_id = _optional_text(msg, "referenceId", fail)
    reference_url = _optional_text(msg, "referenceURL", fail).strip()  # a URL, not an id
    if op_id in (INSERT, DELETE) and not reference_id:
        raise fail(FailureReason.MISSING_REFERENCE_ID, "no referenceId")
    if op_id == INSERT and not reference_url:
        raise fail(FailureReason.MISSING_REFERENCE_URL, "no referenceURL")
    if op_id == IDENTIFY and not reference_id and not reference_url:
        raise fail(FailureReason.MISSING_REFERENCE_ID, "neither referenceId nor referenceURL")
    if reference_id and not is_application_id(reference_id):
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "referenceId is not an identifier")
    gallery = _gallery(msg.get("gallery"), fail) if op_id == IDENTIFY else None
    flags = _flags(msg.get("flags"), fail) if op_id == IDENTIFY else {}
    return AbisRequest(op_id, request_id, msg["requesttime"], reference_id, reference_url, gallery, flags)


def _echo(value: object) -> str:
    """A value from the request as it may appear in the reply (matched by MOSIP), or ""."""
    return value if isinstance(value, str) and len(value) <= 128 and value.isprintable() else ""


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _valid_time(value: object) -> bool:
    if not isinstance(value, str) or not _REQUEST_TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _optional_text(msg: dict[str, Any], key: str, fail: Any) -> str:
    value = msg.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, f"{key} is not a string")
    if not value.strip():
        return ""  # blank is missing (MOSIP sends referenceURL "" with an identify by referenceId)
    # Never trimmed: " r1" or "r1\n" is refused by the identifier rule, not read as "r1" (a
    # cleaned referenceId would insert, match or erase a different reference than the one named).
    return value


def _gallery(value: object, fail: Any) -> tuple[str, ...] | None:
    if value is None or value == {}:
        return None
    ids = value.get("referenceIds") if isinstance(value, dict) and set(value) <= {"referenceIds"} else 0
    if ids is None:
        return None
    if not isinstance(ids, list) or len(ids) > MAX_GALLERY:
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "gallery must be {referenceIds: [...]}")
    out = []
    for entry in ids:
        ref = entry.get("referenceId") if isinstance(entry, dict) and set(entry) == {"referenceId"} else None
        if not is_application_id(ref):
            raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "a gallery entry is not {referenceId}")
        out.append(str(ref))
    return tuple(dict.fromkeys(out)) or None


def _flags(value: object, fail: Any) -> dict[str, str]:
    """Flags are free key/values; only the ones we act on are checked (their values are
    numbers, sent as strings by MOSIP, as numbers by some clients)."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "flags must be an object")
    flags = {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}
    for key in ("maxResults", "targetFPIR"):
        if key in flags and not re.fullmatch(r"\d{1,4}", flags[key].strip()):
            raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, f"flag {key} is not a whole number")
    if flags.get("maxResults", "1").strip() == "0":
        raise fail(FailureReason.INVALID_REQUEST_STRUCTURE, "maxResults must be at least 1")
    return flags


def response_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def success(request: AbisRequest, **fields: Any) -> dict[str, Any]:
    return {
        "id": request.op_id,
        "requestId": request.request_id,
        "responsetime": response_time(),
        "returnValue": SUCCESS,
        **fields,
    }


def failure(op_id: str, request_id: str, reason: FailureReason) -> dict[str, Any]:
    return {
        "id": op_id,
        "requestId": request_id,
        "responsetime": response_time(),
        "returnValue": FAILED,
        "failureReason": str(int(reason)),
    }
