"""The case lifecycle as a pure state machine: (case, request, actor, now) -> the transition, or
a typed refusal. No I/O and no clock of its own, so every rule (roles, claims and their lapse,
the two-person rule, the undo window, escalation, an overturn's reason) is tested without a
store or models (tests/unit/test_case_rules.py). `review.py` loads the case, applies this and
saves the result with its audit entry in one store transaction.

    OPEN --claim/release--> OPEN (claimed_by)
    OPEN --decide same person--> AWAITING_CONFIRMATION --confirm (another supervisor)--> CLOSED
                                                       --overturn (with a reason)--> OPEN, escalated
                                 (the decider may undo within UNDO_MINUTES: OPEN, claimed by them)
    OPEN --decide different people--> CLOSED (the probe is enrolled; the pairs remembered)
    OPEN --decide cannot tell--> OPEN, escalated (a supervisor decides; undoable until claimed)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from face_dedup.domain import (
    UNDO_MINUTES,
    Actor,
    Case,
    CaseDecision,
    CaseStatus,
    RecordStatus,
    Role,
    claim_holder,
)
from face_dedup.errors import InvalidState, PermissionDenied

REVIEWERS = (Role.OFFICER, Role.SUPERVISOR)


class Action(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    UNDO = "undo"
    DECIDE = "decide"
    CONFIRM = "confirm"
    OVERTURN = "overturn"


@dataclass(frozen=True)
class Request:
    """What someone asks of a case."""

    action: Action
    decision: CaseDecision | None = None  # DECIDE only
    comment: str = ""
    matched_record_id: str | None = None  # DECIDE "same person": which candidate


@dataclass(frozen=True)
class Transition:
    """The case after the request, and what else the same store transaction changes."""

    case: Case  # history appended; the store applies it only to the version it was read at
    event: str  # the history entry's and the audit's action: claimed, decided, escalated, ...
    comment: str
    probe_status: RecordStatus | None = None  # the probe record's new status, if it changes
    probe_linked_to: str | None = None
    remember_distinct: bool = False  # "different people": never raise these pairs again
    audit: dict[str, Any] = field(default_factory=dict)  # the audit entry's details


def stamp(now: datetime) -> str:
    """Times as the store keeps them (domain.utc_now's format)."""
    return now.isoformat(timespec="milliseconds")


def apply(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """The one entry point: check who may do what, then compute the new case."""
    require_role(request.action, actor)
    return _RULES[request.action](case, request, actor, now)


def require_role(action: Action, actor: Actor) -> None:
    """Officers and supervisors review; only a supervisor is the second person. (Checked before
    the case is even read, so a wrong role learns nothing about which cases exist.)"""
    roles = (Role.SUPERVISOR,) if action in (Action.CONFIRM, Action.OVERTURN) else REVIEWERS
    if actor.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDenied(f"{actor.name} is {actor.role.value}: only {allowed} may do this")


def _claim(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """An officer takes a case, so two officers do not review the same one at once."""
    if case.status is not CaseStatus.OPEN:
        raise InvalidState(f"case {case.case_id} is {case.status.value}: nothing to claim")
    if case.escalated and actor.role is not Role.SUPERVISOR:
        raise PermissionDenied(f"case {case.case_id} is escalated: a supervisor reviews it")
    _not_held_by_another(case, actor, now)
    return _transition(case, actor, now, "claimed", "", {"claimed_by": actor.name})


def _release(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """Give a claimed case back to the queue: its holder, or any supervisor."""
    if case.claimed_by is None:
        raise InvalidState(f"case {case.case_id} is not claimed")
    if actor.role is not Role.SUPERVISOR and claim_holder(case, now) not in (None, actor.name):
        raise PermissionDenied(
            f"case {case.case_id} is claimed by {case.claimed_by}: they or a supervisor release it"
        )
    return _transition(case, actor, now, "released", "", {"claimed_by": None})


def _undo(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """The person who decided takes it back within UNDO_MINUTES, while it is not final: "same
    person" before a supervisor confirms, "cannot tell" before a supervisor claims the case.
    "Different people" is final at once (it enrolls the application). The case returns to the
    queue claimed by the same person."""
    if case.decided_by != actor.name or case.decided_at is None:
        raise PermissionDenied("only the person who decided can undo the decision")
    elapsed = now - datetime.fromisoformat(case.decided_at)
    if elapsed.total_seconds() > UNDO_MINUTES * 60:
        raise InvalidState(f"the {UNDO_MINUTES}-minute undo window for case {case.case_id} has passed")
    pending_same = case.status is CaseStatus.AWAITING_CONFIRMATION
    pending_unsure = (
        case.status is CaseStatus.OPEN
        and case.escalated
        and case.decision is CaseDecision.CANNOT_TELL
        and case.claimed_by is None
    )
    if not (pending_same or pending_unsure):
        raise InvalidState(f"case {case.case_id}'s decision is final: nothing to undo")
    changes = {**_UNDECIDED, "status": CaseStatus.OPEN, "escalated": False, "claimed_by": actor.name}
    return _transition(case, actor, now, "undone", "", changes)


def _decide(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """The first person's decision. "Same person" waits for a second person to confirm (the
    two-person rule); "different people" enrolls the probe and remembers the pairs; "cannot
    tell" escalates the case to a supervisor."""
    decision, comment = request.decision, request.comment
    if decision is None:
        raise ValueError("a decision names what was decided")
    if case.status is not CaseStatus.OPEN:
        raise InvalidState(f"case {case.case_id} is already {case.status.value} ({case.decision})")
    if case.escalated and actor.role is not Role.SUPERVISOR:
        raise PermissionDenied(f"case {case.case_id} is escalated: a supervisor decides it")
    _not_held_by_another(case, actor, now)
    common: dict[str, Any] = {
        "decided_by": actor.name,
        "decided_at": stamp(now),
        "comment": comment,
        "decision": decision,
    }
    if decision is CaseDecision.SAME_PERSON:
        candidate_ids = [c.record_id for c in case.candidates]
        matched = request.matched_record_id or candidate_ids[0]
        if matched not in candidate_ids:
            raise ValueError(f"{matched} is not a candidate of case {case.case_id}")
        changes: dict[str, Any] = {
            **common,
            "matched_record_id": matched,
            "status": CaseStatus.AWAITING_CONFIRMATION,
        }
        return _transition(case, actor, now, "decided", comment, changes)
    if request.matched_record_id:
        raise ValueError(f"a {decision.value} decision names no matched record")
    if decision is CaseDecision.CANNOT_TELL:
        escalate = {**common, "escalated": True, "claimed_by": None, "status": CaseStatus.OPEN}
        return _transition(case, actor, now, "escalated", comment, escalate)
    return replace(
        _transition(
            case,
            actor,
            now,
            "decided",
            comment,
            {**common, "matched_record_id": None, "status": CaseStatus.CLOSED},
        ),
        probe_status=RecordStatus.ENROLLED,
        remember_distinct=True,
    )


def _confirm(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """The second person: a supervisor who did not make the decision confirms it (the probe
    becomes a confirmed duplicate)."""
    _second_person(case, actor)
    changes = {"status": CaseStatus.CLOSED, "confirmed_by": actor.name, "confirmed_at": stamp(now)}
    return replace(
        _transition(case, actor, now, "confirmed", request.comment, changes),
        probe_status=RecordStatus.CONFIRMED_DUPLICATE,
        probe_linked_to=case.matched_record_id,
    )


def _overturn(case: Case, request: Request, actor: Actor, now: datetime) -> Transition:
    """The second person disagrees: the case reopens, escalated to a supervisor. An overturn
    says why (every channel: the API's body check is a courtesy, this is the rule)."""
    _second_person(case, actor)
    if not request.comment.strip():
        raise ValueError("an overturn needs a reason (comment)")
    changes = {**_UNDECIDED, "status": CaseStatus.OPEN, "escalated": True, "claimed_by": None}
    return _transition(case, actor, now, "overturned", request.comment, changes)


_UNDECIDED: dict[str, Any] = {
    "decision": None,
    "decided_by": None,
    "decided_at": None,
    "matched_record_id": None,
}


def _second_person(case: Case, actor: Actor) -> None:
    if case.status is not CaseStatus.AWAITING_CONFIRMATION:
        raise InvalidState(f"case {case.case_id} is {case.status.value}: nothing to confirm")
    if actor.name == case.decided_by:
        raise PermissionDenied("two-person rule: the person who decided cannot also confirm")


def _not_held_by_another(case: Case, actor: Actor, now: datetime) -> None:
    holder = claim_holder(case, now)  # a lapsed claim holds nothing
    if holder not in (None, actor.name):
        raise InvalidState(f"case {case.case_id} is claimed by {holder}")


def _transition(
    case: Case, actor: Actor, now: datetime, event: str, comment: str, changes: dict[str, Any]
) -> Transition:
    entry: dict[str, Any] = {
        "at": stamp(now),
        "actor": actor.name,
        "role": actor.role.value,
        "action": event,
        "comment": comment,
    }
    shown = {k: v for k, v in changes.items() if k in ("decision", "matched_record_id")}
    entry |= {k: v for k, v in shown.items() if v is not None}
    updated = replace(case, **changes, history=(*case.history, entry))
    audit = {
        "case_id": case.case_id,
        "role": actor.role.value,
        "probe_record_id": case.probe_record_id,
        "status": updated.status.value,
        "comment": comment,
        **{k: (v.value if isinstance(v, CaseDecision) else v) for k, v in shown.items()},
    }
    return Transition(updated, event, comment, audit=audit)


_RULES = {
    Action.CLAIM: _claim,
    Action.RELEASE: _release,
    Action.UNDO: _undo,
    Action.DECIDE: _decide,
    Action.CONFIRM: _confirm,
    Action.OVERTURN: _overturn,
}
