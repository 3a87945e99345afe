"""Case review: the thin use case around the pure state machine (case_rules.py). It checks the
role, reads the case (another tenant's case does not exist here), applies the rules and saves
the new case, the probe's new status and the audit entry in one store transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from face_dedup.domain import Actor, Case, CaseDecision, RecordStatus, utc_now
from face_dedup.errors import InvalidState, NotFound
from face_dedup.usecases import case_rules
from face_dedup.usecases.case_rules import Action, Request
from face_dedup.usecases.registry import Registry


class Review:
    def __init__(self, registry: Registry) -> None:
        self.r = registry

    def apply(self, case_id: str, request: Request, actor: Actor, now: datetime | None = None) -> Case:
        case_rules.require_role(request.action, actor)
        case = self.open_case(case_id)
        at = now or datetime.now(UTC)
        change = case_rules.apply(case, request, actor, at)
        audit = self.r.event(f"case.{change.event}", actor.name, case_rules.stamp(at), **change.audit)
        return self.r.store.save_case_transition(
            change.case,
            probe_status=change.probe_status,
            probe_linked_to=change.probe_linked_to,
            remember_distinct=change.remember_distinct,
            audit=audit,
        )

    def open_case(self, case_id: str) -> Case:
        case = self.r.store.get_case(case_id)
        if case is None or case.tenant != self.r.tenant:  # another tenant's case does not exist here
            raise NotFound(f"no case {case_id}")
        return case

    def open_new(self, case: Case, actor: str, reason: str) -> bool:
        """Open a case built outside the enrollment decision (MOSIP's identify): the probe goes
        to review, audited, officers told. False when that case exists already (its id derives
        from its source, so asking again opens nothing). Only this tenant's cases."""
        if case.tenant != self.r.tenant:
            raise InvalidState(f"case {case.case_id} is not of tenant {self.r.tenant}")
        event = self.r.event(
            "case.opened",
            actor,
            case.created_at,
            case_id=case.case_id,
            kind=case.kind.value,
            probe_record_id=case.probe_record_id,
            reason=reason,
        )
        if not self.r.store.open_case(case, RecordStatus.PENDING_REVIEW, (event,)):
            return False
        self.r.notify_case(case.case_id)
        return True

    def claim(self, case_id: str, actor: Actor) -> Case:
        return self.apply(case_id, Request(Action.CLAIM), actor)

    def release(self, case_id: str, actor: Actor) -> Case:
        return self.apply(case_id, Request(Action.RELEASE), actor)

    def undo(self, case_id: str, actor: Actor, now: datetime | None = None) -> Case:
        return self.apply(case_id, Request(Action.UNDO), actor, now)

    def decide(
        self,
        case_id: str,
        decision: CaseDecision,
        actor: Actor,
        comment: str,
        matched_record_id: str | None = None,
    ) -> Case:
        return self.apply(case_id, Request(Action.DECIDE, decision, comment, matched_record_id), actor)

    def confirm(self, case_id: str, actor: Actor, confirm: bool, comment: str) -> Case:
        return self.apply(
            case_id, Request(Action.CONFIRM if confirm else Action.OVERTURN, comment=comment), actor
        )

    def sheet(self, case: Case, actor: str) -> bytes:
        """The case as one PNG for an officer. Showing faces is audited."""
        from face_dedup.review_sheet import render_case_sheet

        r = self.r
        if r.photo_rgb is None:
            raise RuntimeError("this service was built without a photo decoder (no review sheets)")
        ids = [case.probe_record_id, *(c.record_id for c in case.candidates)]
        sheet = render_case_sheet(case, r.store.describe_records(ids), r.blobs, r.policy.tail, r.photo_rgb)
        r.store.append_audit(r.event("case.viewed", actor, utc_now(), case_id=case.case_id))
        return sheet
