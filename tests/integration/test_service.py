"""The de-duplication service end to end on the embedded adapters, with the real models."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.bootstrap import build_service
from face_dedup.domain import Actor, CaseDecision, CaseStatus, Outcome, RecordStatus, Role
from face_dedup.errors import InvalidState, NotFound, PermissionDenied
from face_dedup.ports import IndexEntry
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings

pytestmark = pytest.mark.shared_data

A1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
A2 = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
B1 = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"
C1 = "lfw/Amber_Tamblyn/Amber_Tamblyn_0001.jpg"


def enroll(service: DedupService, faces_root: Path, name: str, application: str | None = None):  # type: ignore[no-untyped-def]
    return service.enroll((faces_root / name).read_bytes(), InputRef(name, application))


def test_duplicate_application_opens_a_case_with_the_right_candidate(
    service: DedupService, faces_root: Path
) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    other = enroll(service, faces_root, B1, "APP-2")
    second = enroll(service, faces_root, A2, "APP-3")
    assert first.outcome is Outcome.ENROLLED and other.outcome is Outcome.ENROLLED
    assert second.outcome in (Outcome.REVIEW, Outcome.DUPLICATE)
    assert second.candidates[0].record_id == first.record_id
    assert second.candidates[0].source == A1 and second.candidates[0].application_id == "APP-1"
    case = service.store.get_case(second.case_id or "")
    assert case is not None and case.probe_record_id == second.record_id
    assert case.thresholds["gallery_size"] == 2 and case.thresholds["model_pack"] == service.model_pack
    assert service.gallery_size() == 3  # the probe is searchable too, while its case is open
    assert enroll(service, faces_root, A2, "APP-3") == second  # read back exactly as decided


def test_same_input_twice_changes_nothing(service: DedupService, faces_root: Path) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    events = len(service.store.audit_events())
    again = enroll(service, faces_root, A1, "APP-1")
    assert again == first
    assert len(service.store.audit_events()) == events
    assert service.gallery_size() == 1


def test_same_photo_for_another_application_is_a_duplicate(service: DedupService, faces_root: Path) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    copy = enroll(service, faces_root, A1, "APP-9")
    assert copy.outcome is Outcome.DUPLICATE
    assert copy.candidates[0].record_id == first.record_id
    assert copy.candidates[0].score > 0.99
    record = service.store.get_record(copy.record_id or "")
    assert record is not None and record.status is RecordStatus.LINKED_DUPLICATE
    assert record.linked_to == first.record_id


def test_new_photo_for_an_enrolled_application_is_verified_not_enrolled(
    service: DedupService, faces_root: Path
) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    again = enroll(service, faces_root, A2, "APP-1")  # the same applicant, a new photo
    assert again.outcome is Outcome.VERIFIED and again.record_id == first.record_id
    assert again.candidates[0].score >= service.tail.threshold_for_fmr(service.settings.verify_fmr)
    assert service.gallery_size() == 1  # nothing new enrolled
    assert service.blobs.keys(f"{service.tenant}/") == sorted(
        service.blobs.keys(f"{service.tenant}/{first.record_id}/")
    )
    assert [e.action for e in service.store.audit_events()].count("import.verified") == 1


def test_photo_not_matching_its_own_application_goes_to_review(
    service: DedupService, faces_root: Path
) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    other = enroll(service, faces_root, B1, "APP-1")  # someone else under the same application
    assert other.outcome is Outcome.REVIEW
    assert first.record_id in {c.record_id for c in other.candidates}
    case = service.store.get_case(other.case_id or "")
    assert case is not None and case.thresholds["own_application_mismatch"] is True


def test_unusable_photo_is_rejected_with_its_reason_and_nothing_enrolled(service: DedupService) -> None:
    item = service.enroll(b"\xff\xd8\xff\xe0 truncated", InputRef("broken.jpg", "APP-1"))
    assert item.outcome is Outcome.REJECTED and item.reason == "UNDECODABLE"
    assert item.record_id is None and service.gallery_size() == 0
    assert service.store.audit_events()[-1].action == "import.rejected"


ANN = Actor("officer ann", Role.OFFICER)
BOB = Actor("officer bob", Role.OFFICER)
SUE = Actor("supervisor sue", Role.SUPERVISOR)
TOM = Actor("supervisor tom", Role.SUPERVISOR)
AUDITOR = Actor("auditor al", Role.AUDITOR)


def case_for_a_duplicate(service: DedupService, faces_root: Path) -> tuple[str, str, str]:
    first = enroll(service, faces_root, A1, "APP-1")
    second = enroll(service, faces_root, A2, "APP-2")
    assert second.case_id and first.record_id and second.record_id
    return second.case_id, first.record_id, second.record_id


def test_same_person_needs_a_second_person(service: DedupService, faces_root: Path) -> None:
    case_id, first, probe_id = case_for_a_duplicate(service, faces_root)
    case = service.decide_case(case_id, CaseDecision.SAME_PERSON, ANN, "same scar")
    assert case.status is CaseStatus.AWAITING_CONFIRMATION and case.matched_record_id == first
    probe = service.store.get_record(probe_id)
    assert probe is not None and probe.status is not RecordStatus.CONFIRMED_DUPLICATE  # not yet
    with pytest.raises(PermissionDenied):  # an officer cannot confirm
        service.confirm_case(case_id, BOB, True, "agree")
    with pytest.raises(PermissionDenied):  # nor can the person who decided, whatever their role
        service.confirm_case(case_id, Actor("officer ann", Role.SUPERVISOR), True, "agree with myself")
    confirmed = service.confirm_case(case_id, SUE, True, "agree")
    assert confirmed.status is CaseStatus.CLOSED and confirmed.confirmed_by == "supervisor sue"
    probe = service.store.get_record(probe_id)
    assert probe is not None and probe.status is RecordStatus.CONFIRMED_DUPLICATE and probe.linked_to == first
    assert [h["action"] for h in confirmed.history] == ["decided", "confirmed"]
    actions = [e.action for e in service.store.audit_events()]
    assert actions[-2:] == ["case.decided", "case.confirmed"]
    with pytest.raises(InvalidState):
        service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, BOB, "no")
    with pytest.raises(NotFound):
        service.decide_case("case_missing", CaseDecision.DIFFERENT_PEOPLE, BOB, "no")


def test_overturned_and_cannot_tell_go_to_a_supervisor(service: DedupService, faces_root: Path) -> None:
    case_id, _, _ = case_for_a_duplicate(service, faces_root)
    service.decide_case(case_id, CaseDecision.SAME_PERSON, ANN, "same")
    reopened = service.confirm_case(case_id, SUE, False, "ears differ")
    assert reopened.status is CaseStatus.OPEN and reopened.escalated and reopened.decision is None
    with pytest.raises(PermissionDenied):
        service.decide_case(case_id, CaseDecision.SAME_PERSON, BOB, "same")  # escalated: supervisors only
    unsure = service.decide_case(case_id, CaseDecision.CANNOT_TELL, TOM, "photo too old")
    assert unsure.status is CaseStatus.OPEN and unsure.escalated
    assert [h["action"] for h in unsure.history] == ["decided", "overturned", "escalated"]


def test_claims_keep_two_officers_apart_and_roles_are_enforced(
    service: DedupService, faces_root: Path
) -> None:
    case_id, _, _ = case_for_a_duplicate(service, faces_root)
    with pytest.raises(PermissionDenied):
        service.claim_case(case_id, AUDITOR)
    with pytest.raises(PermissionDenied):
        service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, AUDITOR, "auditors do not decide")
    assert service.claim_case(case_id, ANN).claimed_by == "officer ann"
    with pytest.raises(InvalidState, match="claimed by officer ann"):
        service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, BOB, "mine now")
    assert (
        service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, ANN, "twins").status is CaseStatus.CLOSED
    )


def test_different_people_decision_enrolls_the_probe(service: DedupService, faces_root: Path) -> None:
    case_id, _, probe_id = case_for_a_duplicate(service, faces_root)
    service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, ANN, "twins")  # one person suffices
    probe = service.store.get_record(probe_id)
    assert probe is not None and probe.status is RecordStatus.ENROLLED and probe.linked_to is None


def test_notifications_carry_only_a_case_id_and_a_link(service: DedupService, faces_root: Path) -> None:
    enroll(service, faces_root, A1, "APP-1")
    second = enroll(service, faces_root, A2, "APP-2")
    outbox = service.settings.data_dir / "outbox" / "notifications.jsonl"
    messages = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert len(messages) == 1
    message = messages[0]
    assert message["case_id"] == second.case_id and second.case_id in message["link"]
    assert set(message) == {"at", "kind", "tenant", "case_id", "link", "case_ids"}
    text = json.dumps(message)
    assert "Abel" not in text and "APP-" not in text and "score" not in text


def test_erase_really_erases_and_keeps_a_receipt(service: DedupService, faces_root: Path) -> None:
    first = enroll(service, faces_root, A1, "APP-1")
    record_id = first.record_id or ""
    probe = (faces_root / A1).read_bytes()
    assert service.blobs.keys(f"{service.tenant}/{record_id}/")
    receipt = service.erase(record_id, "dpo", "request 42")
    assert receipt["vectors"] == 1 and receipt["blobs"] == 2 and receipt["records"] == 1
    assert service.store.get_record(record_id) is None
    assert service.blobs.keys(f"{service.tenant}/{record_id}/") == []
    assert service.search(probe, top_k=5).candidates == ()
    (last,) = [e for e in service.store.audit_events() if e.action == "record.erased"]
    assert last.actor == "dpo" and last.details["reason"] == "request 42"
    # One machine: face-dedup keeps no backup; the receipt says so (and the caller's copy too).
    assert (
        receipt["backups"]
        == last.details["backups"]
        == [{"backup": "none kept by face-dedup", "until": last.at}]
    )
    assert "Abel" not in json.dumps(asdict(last))  # no file names (they are often people's names)
    with pytest.raises(NotFound):
        service.erase(record_id, "dpo", "again")
    again = service.enroll(probe, InputRef(A1, "APP-1"))  # a new enrollment after erasure is possible
    assert again.outcome is Outcome.ENROLLED


def test_verify_one_to_one(service: DedupService, faces_root: Path) -> None:
    same = service.verify((faces_root / A1).read_bytes(), (faces_root / A2).read_bytes())
    different = service.verify((faces_root / A1).read_bytes(), (faces_root / C1).read_bytes())
    broken = service.verify((faces_root / A1).read_bytes(), b"not an image")
    assert same.match and same.score is not None and same.score >= same.threshold
    assert not different.match and different.score is not None and different.score < different.threshold
    assert (
        not broken.match
        and broken.score is None
        and broken.rejected[0][:2] == ("second", "UNSUPPORTED_FORMAT")
    )


def test_tenants_never_see_each_other(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "shared-registry"
    a, adapters_a = build_service(base_settings.with_overrides(data_dir=data, tenant="tenant-a"))
    enroll(a, faces_root, A1, "APP-1")
    adapters_a.close()
    b, adapters_b = build_service(base_settings.with_overrides(data_dir=data, tenant="tenant-b"))
    try:
        item = enroll(b, faces_root, A2, "APP-1")
        assert item.outcome is Outcome.ENROLLED
        assert b.search((faces_root / A1).read_bytes(), top_k=5).candidates[0].record_id == item.record_id
        assert len(b.store.list_cases(tenant="tenant-b")) == 0
    finally:
        adapters_b.close()


class CrashingIndex(ExactVectorIndex):
    """The real embedded index, made to die on its Nth add: the moment between the store's
    commit and the index write, the only place a crash can split an input."""

    def __init__(self, path: Path, crash_on_add: int) -> None:
        super().__init__(path)
        self.adds = 0
        self.crash_on_add = crash_on_add

    def add(self, entries: list[IndexEntry]) -> None:  # type: ignore[override]
        self.adds += 1
        if self.adds == self.crash_on_add:
            raise KeyboardInterrupt("simulated crash")
        super().add(entries)


def state(service: DedupService) -> tuple[object, ...]:
    records = {r.record_id: (r.status, r.linked_to) for r in service.store.iter_templates()}
    cases = {
        c.case_id: [x.record_id for x in c.candidates]
        for c in service.store.list_cases(tenant="default", limit=999)
    }
    return (
        records,
        cases,
        service.gallery_size(),
        service.store.outcome_counts(tenant="default"),
        len(service.store.audit_events()),
    )


def test_crash_between_commit_and_index_recovers_to_the_uninterrupted_state(
    base_settings: Settings, faces_root: Path, tmp_path: Path
) -> None:
    names = [A1, B1, A2, C1]
    clean, clean_adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "clean"))
    for name in names:
        enroll(clean, faces_root, name)
    expected = state(clean)
    clean_adapters.close()

    settings = base_settings.with_overrides(data_dir=tmp_path / "crashed")
    service, adapters = build_service(settings)
    crashing = CrashingIndex(settings.data_dir / "index.sqlite", crash_on_add=3)
    adapters.index.close()
    service.index = adapters.index = crashing
    with pytest.raises(KeyboardInterrupt):
        for name in names:
            enroll(service, faces_root, name)
    adapters.close()

    restarted, restarted_adapters = build_service(settings)  # reconciles the index on start
    try:
        for name in names:
            enroll(restarted, faces_root, name)
        assert state(restarted) == expected
        assert np.isclose(
            restarted.search((faces_root / A2).read_bytes(), 1).candidates[0].score, 1.0, atol=1e-5
        )
    finally:
        restarted_adapters.close()
