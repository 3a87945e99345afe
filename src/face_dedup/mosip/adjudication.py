"""Human review for MOSIP: an Identify's candidates can open our case (FACE_DEDUP_ABIS_OPEN_CASES),
and the officers' two-person decision goes back in the reply format of MOSIP's manual
adjudication system (MAS): `candidateList` with the operators' ids and comments in each
candidate's `analytics`.

Only a final decision is returned: "same person" confirmed by a second person (the matched
reference is the candidate), or "different people" (no candidate). A case still open, escalated
or awaiting confirmation has no reply yet.
"""

from __future__ import annotations

from typing import Any

from face_dedup.domain import (
    Candidate,
    Case,
    CaseDecision,
    CaseStatus,
    Outcome,
    stable_id,
    utc_now,
)
from face_dedup.errors import InvalidState
from face_dedup.mosip.messages import response_time
from face_dedup.queries import TenantReader
from face_dedup.service import DedupService

MAS_ID = "mosip.manual.adjudication.adjudicate"


def open_identify_case(
    service: DedupService, probe_record_id: str, candidates: list[Candidate], thresholds: dict[str, Any]
) -> str | None:
    """A case for officers on an Identify's candidates (once per probe: the id derives from it).
    Returns the case id when a case was opened now."""
    if not candidates:
        return None
    case = Case(
        case_id=stable_id("case", "mosip-identify", service.tenant, probe_record_id),
        tenant=service.tenant,
        probe_record_id=probe_record_id,
        kind=Outcome.DUPLICATE if thresholds.get("band") == "duplicate" else Outcome.REVIEW,
        candidates=tuple(sorted(candidates, key=lambda c: -c.score)),
        status=CaseStatus.OPEN,
        created_at=utc_now(),
        thresholds=thresholds,
    )
    return case.case_id if service.open_new_case(case, "mosip-abis", "MOSIP identify") else None


def adjudication_reply(reader: TenantReader, case_id: str, request_id: str) -> dict[str, Any]:
    """MOSIP's MAS reply for a decided case, read through `queries` (its tenant and role checks:
    another tenant's case is NotFound). Raises InvalidState while no final decision exists."""
    case = reader.case(case_id)
    if case.status is not CaseStatus.CLOSED:
        raise InvalidState(f"case {case_id} is {case.status.value}: no final decision yet")
    candidates: list[dict[str, Any]] = []
    if case.decision is CaseDecision.SAME_PERSON and case.matched_record_id:
        matched = reader.record(case.matched_record_id)
        reference = (
            matched.application_id
            if matched
            else next(
                (c.application_id for c in case.candidates if c.record_id == case.matched_record_id), None
            )
        )
        if not reference:
            raise InvalidState(f"case {case_id}: the matched record has no MOSIP reference")
        candidates.append({"referenceId": reference, "analytics": _operators(case)})
    return {
        "id": MAS_ID,
        "requestId": request_id,
        "responsetime": response_time(),
        "returnValue": "1",
        "candidateList": {"count": str(len(candidates)), "candidates": candidates},
    }


def _operators(case: Case) -> dict[str, str]:
    """The two people: who decided (primary) and who confirmed (secondary), with their comments."""
    decided = _last(case, "decided")
    confirmed = _last(case, "confirmed")
    return {
        "primaryOperatorID": str(case.decided_by or decided.get("actor", "")),
        "primaryOperatorComments": str(decided.get("comment", case.comment or "")),
        "secondaryOperatorID": str(case.confirmed_by or confirmed.get("actor", "")),
        "secondaryOperatorComments": str(confirmed.get("comment", "")),
        "Face": "F",  # the modality that matched, as MOSIP's own MAS reports it
    }


def _last(case: Case, action: str) -> dict[str, Any]:
    return next((h for h in reversed(case.history) if h.get("action") == action), {})
