"""The case lifecycle's rules as a pure state machine (usecases/case_rules.py): no store, no
models, no clock of its own. The same rules run through the service on real SQLite in
test_rules_without_models.py and with the real models in tests/integration/test_service.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from face_dedup.domain import (
    CLAIM_MINUTES,
    UNDO_MINUTES,
    Actor,
    Candidate,
    Case,
    CaseDecision,
    CaseStatus,
    Outcome,
    RecordStatus,
    Role,
)
from face_dedup.errors import InvalidState, PermissionDenied
from face_dedup.usecases.case_rules import Action, Request, Transition, apply

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ANN = Actor("ann", Role.OFFICER)
BEN = Actor("ben", Role.OFFICER)
SUE = Actor("sue", Role.SUPERVISOR)
SAM = Actor("sam", Role.SUPERVISOR)
AUDITOR = Actor("al", Role.AUDITOR)


def _case() -> Case:
    return Case(
        case_id="case-1",
        tenant="default",
        probe_record_id="rec-probe",
        kind=Outcome.REVIEW,
        candidates=(Candidate("rec-a", 0.61), Candidate("rec-b", 0.55)),
        status=CaseStatus.OPEN,
        created_at=T0.isoformat(),
        thresholds={},
    )


def _run(case: Case, request: Request, actor: Actor, minutes: float = 0) -> Transition:
    return apply(case, request, actor, T0 + timedelta(minutes=minutes))


def _same(case: Case, actor: Actor = ANN, minutes: float = 0, matched: str | None = None) -> Case:
    request = Request(Action.DECIDE, CaseDecision.SAME_PERSON, "same ears", matched)
    return _run(case, request, actor, minutes).case


def test_same_person_waits_for_a_second_person_who_is_a_supervisor_and_not_the_decider() -> None:
    decided = _same(_case())
    assert decided.status is CaseStatus.AWAITING_CONFIRMATION
    assert (decided.decided_by, decided.matched_record_id) == ("ann", "rec-a")  # the best, by default
    with pytest.raises(PermissionDenied, match="only supervisor"):
        _run(decided, Request(Action.CONFIRM, comment="ok"), BEN)
    self_decided = _same(_case(), SUE)
    with pytest.raises(PermissionDenied, match="two-person rule"):
        _run(self_decided, Request(Action.CONFIRM, comment="me again"), SUE)
    confirmed = _run(decided, Request(Action.CONFIRM, comment="agreed"), SUE, 1)
    assert confirmed.case.status is CaseStatus.CLOSED and confirmed.case.confirmed_by == "sue"
    assert confirmed.probe_status is RecordStatus.CONFIRMED_DUPLICATE
    assert confirmed.probe_linked_to == "rec-a"
    assert [h["action"] for h in confirmed.case.history] == ["decided", "confirmed"]
    with pytest.raises(InvalidState, match="nothing to confirm"):
        _run(confirmed.case, Request(Action.CONFIRM, comment="again"), SAM, 2)


def test_an_overturn_needs_a_reason_and_reopens_the_case_for_a_supervisor() -> None:
    decided = _same(_case())
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="needs a reason"):
            _run(decided, Request(Action.OVERTURN, comment=blank), SUE)
    overturned = _run(decided, Request(Action.OVERTURN, comment="the ears differ"), SUE, 1)
    case = overturned.case
    assert (case.status, case.escalated, case.decision, case.decided_by) == (
        CaseStatus.OPEN,
        True,
        None,
        None,
    )
    assert overturned.probe_status is None and overturned.audit["comment"] == "the ears differ"
    with pytest.raises(PermissionDenied, match="escalated"):  # an officer no longer decides it
        _run(case, Request(Action.DECIDE, CaseDecision.DIFFERENT_PEOPLE, "no"), BEN, 2)
    closed = _run(case, Request(Action.DECIDE, CaseDecision.DIFFERENT_PEOPLE, "no"), SAM, 2)
    assert closed.case.status is CaseStatus.CLOSED


def test_different_people_is_final_enrolls_the_probe_and_remembers_the_pairs() -> None:
    done = _run(_case(), Request(Action.DECIDE, CaseDecision.DIFFERENT_PEOPLE, "different"), ANN)
    assert done.case.status is CaseStatus.CLOSED
    assert (done.probe_status, done.remember_distinct) == (RecordStatus.ENROLLED, True)
    with pytest.raises(InvalidState, match="final"):
        _run(done.case, Request(Action.UNDO), ANN, 1)
    with pytest.raises(ValueError, match="names no matched record"):
        _run(_case(), Request(Action.DECIDE, CaseDecision.DIFFERENT_PEOPLE, "x", "rec-a"), ANN)
    with pytest.raises(ValueError, match="not a candidate"):
        _same(_case(), matched="rec-elsewhere")


def test_undo_only_by_the_decider_within_the_window_and_back_to_them() -> None:
    decided = _same(_case())
    with pytest.raises(PermissionDenied, match="only the person who decided"):
        _run(decided, Request(Action.UNDO), BEN, 1)
    with pytest.raises(InvalidState, match="undo window"):
        _run(decided, Request(Action.UNDO), ANN, UNDO_MINUTES + 0.1)
    undone = _run(decided, Request(Action.UNDO), ANN, UNDO_MINUTES - 0.1).case
    assert (undone.status, undone.decision, undone.claimed_by) == (CaseStatus.OPEN, None, "ann")
    # "cannot tell" is undoable until a supervisor claims the escalated case
    unsure = _run(_case(), Request(Action.DECIDE, CaseDecision.CANNOT_TELL, "unsure"), ANN).case
    assert unsure.escalated and unsure.claimed_by is None
    claimed = _run(unsure, Request(Action.CLAIM), SUE, 1).case
    with pytest.raises(InvalidState, match="final"):
        _run(claimed, Request(Action.UNDO), ANN, 2)
    assert _run(unsure, Request(Action.UNDO), ANN, 2).case.escalated is False


def test_claims_hold_the_case_until_they_lapse_or_are_released() -> None:
    held = _run(_case(), Request(Action.CLAIM), ANN).case
    with pytest.raises(InvalidState, match="claimed by ann"):
        _run(held, Request(Action.CLAIM), BEN, 1)
    with pytest.raises(InvalidState, match="claimed by ann"):
        _run(held, Request(Action.DECIDE, CaseDecision.DIFFERENT_PEOPLE, "x"), BEN, 1)
    with pytest.raises(PermissionDenied, match="they or a supervisor"):
        _run(held, Request(Action.RELEASE), BEN, 1)
    # a lapsed claim holds nothing: someone else may take the case
    assert _run(held, Request(Action.CLAIM), BEN, CLAIM_MINUTES + 1).case.claimed_by == "ben"
    released = _run(held, Request(Action.RELEASE), SUE, 1).case  # any supervisor releases
    assert released.claimed_by is None
    with pytest.raises(InvalidState, match="not claimed"):
        _run(released, Request(Action.RELEASE), ANN, 2)


def test_roles_outside_review_change_nothing() -> None:
    for action in Action:
        with pytest.raises(PermissionDenied):
            _run(_case(), Request(action, CaseDecision.SAME_PERSON, "x"), AUDITOR)


def test_the_transition_is_pure_the_input_case_is_untouched() -> None:
    case = _case()
    changed = _same(case)
    assert case.status is CaseStatus.OPEN and case.history == ()
    assert changed.history[0] == {
        "at": T0.isoformat(timespec="milliseconds"),
        "actor": "ann",
        "role": "officer",
        "action": "decided",
        "comment": "same ears",
        "decision": CaseDecision.SAME_PERSON,
        "matched_record_id": "rec-a",
    }
