"""Domain types. Plain data: no I/O, no vision. Nothing here holds a face image; only
`Record.embedding` is biometric, and it never leaves the store, the index or the engine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.outcomes import Outcome as Outcome  # re-exported: the domain's name for it


class RecordStatus(StrEnum):
    ENROLLED = "enrolled"
    PENDING_REVIEW = "pending_review"
    LINKED_DUPLICATE = "linked_duplicate"
    CONFIRMED_DUPLICATE = "confirmed_duplicate"


class CaseStatus(StrEnum):
    OPEN = "open"  # waiting for an officer (or, when escalated, a supervisor)
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # "same person" decided; a second person confirms
    CLOSED = "closed"


class CaseDecision(StrEnum):
    SAME_PERSON = "same_person"
    DIFFERENT_PEOPLE = "different_people"
    CANNOT_TELL = "cannot_tell"  # escalates the case to a supervisor


class Role(StrEnum):
    OFFICER = "officer"  # claims and decides cases
    SUPERVISOR = "supervisor"  # decides escalated cases, confirms or overturns, erases
    AUDITOR = "auditor"  # reads cases and the audit log; decides nothing
    ADMIN = "admin"  # operates the registry (imports, settings); decides nothing


@dataclass(frozen=True)
class Actor:
    """Who does something. Authentication is the caller's job (API, CLI); this is its result."""

    name: str
    role: Role

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("an actor needs a name")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def stable_id(prefix: str, *parts: str) -> str:
    """Deterministic ids make retries and resumed imports write the same rows, not new ones."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}_{digest[:24]}"


@dataclass(frozen=True)
class Candidate:
    record_id: str
    score: float
    source: str | None = None
    application_id: str | None = None

    def as_stored(self) -> dict[str, Any]:
        """Lossless, for stores: what is read back equals what was decided on."""
        return {
            "record_id": self.record_id,
            "source": self.source,
            "application_id": self.application_id,
            "score": self.score,
        }

    def as_dict(self) -> dict[str, Any]:
        """For reports and people: the score rounded."""
        return {
            "record_id": self.record_id,
            "source": self.source,
            "application_id": self.application_id,
            "score": round(self.score, 4),
        }


def candidates_to_json(candidates: Iterable[Candidate]) -> str:
    return json.dumps([c.as_stored() for c in candidates])


def candidates_from_json(text: str) -> tuple[Candidate, ...]:
    return tuple(
        Candidate(c["record_id"], float(c["score"]), c.get("source"), c.get("application_id"))
        for c in json.loads(text)
    )


@dataclass(frozen=True)
class Record:
    record_id: str
    tenant: str
    model_pack: str
    application_id: str | None
    source: str
    content_sha256: str
    status: RecordStatus
    created_at: str
    embedding: NDArray[np.float32] = field(repr=False)
    linked_to: str | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    # How many photos' templates the record holds; with more than one, `embedding` is their
    # normalised mean (record_templates.py: fusion rule and its score calibration).
    template_count: int = 1


def template_problem(vector: Iterable[float] | NDArray[np.float32]) -> str | None:
    """Why stored bytes cannot be a template any more (they rotted: SQLite keeps no checksums),
    or None. Templates are finite and unit length."""
    values = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(values)):
        return "it holds values that are not numbers"
    norm = float(np.linalg.norm(values))
    if abs(norm - 1.0) > 1e-3:
        return f"it is not unit length (norm {norm:.4f})"
    return None


@dataclass(frozen=True)
class Case:
    case_id: str
    tenant: str
    probe_record_id: str
    kind: Outcome  # REVIEW or DUPLICATE
    candidates: tuple[Candidate, ...]
    status: CaseStatus
    created_at: str
    thresholds: dict[str, Any]
    decision: CaseDecision | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None
    matched_record_id: str | None = None
    claimed_by: str | None = None
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    escalated: bool = False
    history: tuple[dict[str, Any], ...] = ()  # every transition: who, when, what, why
    version: int = 0  # optimistic concurrency: a transition applies only to the version it read


@dataclass(frozen=True)
class ImportItem:
    """One input's outcome, keyed by its idempotency key: re-importing returns this."""

    key: str
    tenant: str
    source: str
    application_id: str | None
    content_sha256: str
    outcome: Outcome
    created_at: str
    record_id: str | None = None
    case_id: str | None = None
    reason: str | None = None
    message: str | None = None
    candidates: tuple[Candidate, ...] = ()
    measures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StagedInput:
    """An analysed upload waiting for its de-duplication decision (serverless workflow).
    Holds the template, so it lives only in the store and expires if never completed."""

    key: str
    record_id: str
    tenant: str
    model_pack: str
    source: str
    application_id: str | None
    content_sha256: str
    embedding: NDArray[np.float32] = field(repr=False)
    measures: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: str
    tenant: str
    at: str
    details: dict[str, Any]
    seq: int | None = None


@dataclass(frozen=True)
class Notification:
    """What officers are told: case ids and where to look. Never a face, a name or a score.
    `kind` "case.opened" names one case; "cases.opened" is a digest of `case_ids`."""

    kind: str
    tenant: str
    case_id: str
    link: str
    case_ids: tuple[str, ...] = ()


def batch_notifications(notifications: list[Notification], queue_link: str) -> list[Notification]:
    """When many cases open in one period, officers get one message per tenant listing them,
    not one message each. A single case is passed on as it is."""
    by_tenant: dict[str, list[Notification]] = {}
    for notification in notifications:
        by_tenant.setdefault(notification.tenant, []).append(notification)
    batched = []
    for tenant, group in by_tenant.items():
        ids = tuple(dict.fromkeys(i for n in group for i in (n.case_ids or (n.case_id,)) if i))
        if len(ids) == 1:
            batched.append(group[0])
        elif ids:
            batched.append(Notification("cases.opened", tenant, "", queue_link, ids))
    return batched


# A claim lapses this long after it was taken, so a case never stays with an officer who left;
# a supervisor (or the holder) can release it sooner.
CLAIM_MINUTES = 30
# The person who decided may take a decision back this long after, while it is not final.
UNDO_MINUTES = 5


def claimed_at(case: Case) -> str | None:
    """When the current claim was taken (its history entry), if any."""
    if case.claimed_by is None:
        return None
    for entry in reversed(case.history):
        # An undo hands the case back to whoever decided: a claim taken then, which lapses like
        # any other (without this, an undo by someone who never claimed held the case forever).
        if entry.get("action") in ("claimed", "undone"):
            return str(entry.get("at"))
    return None


def claim_holder(case: Case, now: datetime | None = None) -> str | None:
    """Who holds the case now: None once the claim is older than CLAIM_MINUTES, and None once
    the case is no longer open (decided: a claim holds nothing; the console said "Claimed by
    ann" on a closed case)."""
    taken = claimed_at(case)
    if case.claimed_by is None or case.status is not CaseStatus.OPEN:
        return None
    if taken is not None:
        age = (now or datetime.now(UTC)) - datetime.fromisoformat(taken)
        if age.total_seconds() >= CLAIM_MINUTES * 60:
            return None
    return case.claimed_by
