"""The business rules, with the engine faked (FakeFaceAnalyzer) and every other adapter real
(embedded SQLite store and index, files, outbox): no model files, no labelled photos. The same
rules run with the real models and photos in tests/integration/test_service.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from face_dedup.bootstrap import Adapters, build_service
from face_dedup.domain import Actor, CaseDecision, CaseStatus, Outcome, RecordStatus, Role
from face_dedup.errors import InvalidState, NotFound, PermissionDenied, Reason
from face_dedup.models.custom import find_pack
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, at_score, unit

OFFICER = Actor("olga", Role.OFFICER)
SUPERVISOR = Actor("sam", Role.SUPERVISOR)
OTHER_SUPERVISOR = Actor("sara", Role.SUPERVISOR)


def _settings(data_dir: Path, tenant: str = "default") -> Settings:
    # An empty environment: nothing on this machine (models, AWS, env vars) reaches the rules.
    return Settings.load({}, data_dir=data_dir, models_dir=data_dir.parent / "no-models", tenant=tenant)


@pytest.fixture
def fake(tmp_path: Path) -> FakeFaceAnalyzer:
    settings = _settings(tmp_path / "registry")
    return FakeFaceAnalyzer(find_pack(settings.model_pack, settings.models_dir))


@pytest.fixture
def built(tmp_path: Path, fake: FakeFaceAnalyzer) -> Iterator[tuple[DedupService, Adapters]]:
    service, adapters = build_service(_settings(tmp_path / "registry"), analyzer=fake)
    yield service, adapters
    adapters.close()


@pytest.fixture
def service(built: tuple[DedupService, Adapters]) -> DedupService:
    return built[0]


def test_the_service_runs_on_the_fake_not_on_model_files(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    photo = fake.face(b"photo-1", unit(fake.dim, 0))
    item = service.enroll(photo, InputRef("a.jpg", "APP-1"))
    assert item.outcome is Outcome.ENROLLED and fake.calls == 1
    assert service.gallery_size() == 1


def _enroll_at(service: DedupService, fake: FakeFaceAnalyzer, score: float, name: str) -> Outcome:
    base = fake.face(b"base", unit(fake.dim, 0))
    assert service.enroll(base, InputRef("base.jpg", "APP-BASE")).outcome is Outcome.ENROLLED
    photo = fake.face(name.encode(), at_score(unit(fake.dim, 0), score, 1))
    return service.enroll(photo, InputRef(name, "APP-NEW")).outcome


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("below_review", Outcome.ENROLLED),
        ("at_review", Outcome.REVIEW),
        ("between", Outcome.REVIEW),
        ("at_duplicate", Outcome.DUPLICATE),
    ],
)
def test_decision_bands_follow_the_thresholds_in_force(
    service: DedupService, fake: FakeFaceAnalyzer, where: str, expected: Outcome
) -> None:
    t = service.thresholds(gallery_size=1)  # the gallery the second input is compared with
    assert 0 < t.review < t.duplicate < 1
    score = {
        "below_review": t.review - 0.01,
        "at_review": t.review + 1e-4,
        "between": (t.review + t.duplicate) / 2,
        "at_duplicate": t.duplicate + 1e-4,
    }[where]
    assert _enroll_at(service, fake, score, f"{where}.jpg") is expected


def test_own_application_verify_first_and_mismatch_goes_to_review(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    first = fake.face(b"app-1-first", unit(fake.dim, 0))
    assert service.enroll(first, InputRef("1.jpg", "APP-1")).outcome is Outcome.ENROLLED
    again = fake.face(b"app-1-again", at_score(unit(fake.dim, 0), 0.99, 1))
    assert service.enroll(again, InputRef("2.jpg", "APP-1")).outcome is Outcome.VERIFIED
    stranger = fake.face(b"app-1-stranger", unit(fake.dim, 5))  # nobody like it in the registry
    item = service.enroll(stranger, InputRef("3.jpg", "APP-1"))
    assert item.outcome is Outcome.REVIEW and item.case_id is not None


def test_a_rejection_keeps_its_reason_and_enrolls_nothing(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    blurry = fake.reject(b"blurry", Reason.BLURRY, "too blurry to compare")
    item = service.enroll(blurry, InputRef("b.jpg", "APP-1"))
    assert item.outcome is Outcome.REJECTED and item.reason == Reason.BLURRY.value
    assert item.record_id is None and service.gallery_size() == 0


def test_reimporting_the_same_input_changes_nothing(service: DedupService, fake: FakeFaceAnalyzer) -> None:
    photo = fake.face(b"once", unit(fake.dim, 0))
    first = service.enroll(photo, InputRef("a.jpg", "APP-1"))
    audit = len(service.store.audit_events())
    again = service.enroll(photo, InputRef("a.jpg", "APP-1"))
    assert again == first
    assert fake.calls == 1  # answered from the import record: not even analysed again
    assert service.gallery_size() == 1 and len(service.store.audit_events()) == audit
    # The same bytes for another application are another input: a duplicate of the first.
    other = service.enroll(photo, InputRef("a.jpg", "APP-2"))
    assert other.outcome is Outcome.DUPLICATE and other.candidates[0].record_id == first.record_id


def _review_case(service: DedupService, fake: FakeFaceAnalyzer) -> str:
    t = service.thresholds(gallery_size=1)
    assert _enroll_at(service, fake, (t.review + t.duplicate) / 2, "probe.jpg") is Outcome.REVIEW
    (case,) = service.store.list_cases(tenant=service.tenant)
    return case.case_id


def test_same_person_needs_a_second_person(service: DedupService, fake: FakeFaceAnalyzer) -> None:
    case_id = _review_case(service, fake)
    decided = service.decide_case(case_id, CaseDecision.SAME_PERSON, SUPERVISOR, "same eyes")
    assert decided.status is CaseStatus.AWAITING_CONFIRMATION
    with pytest.raises(PermissionDenied, match="two-person rule"):
        service.confirm_case(case_id, SUPERVISOR, True, "me again")
    with pytest.raises(PermissionDenied):
        service.confirm_case(case_id, OFFICER, True, "an officer cannot confirm")
    with pytest.raises(InvalidState):
        service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, OTHER_SUPERVISOR, "too late")
    confirmed = service.confirm_case(case_id, OTHER_SUPERVISOR, True, "agreed")
    assert confirmed.status is CaseStatus.CLOSED and confirmed.confirmed_by == OTHER_SUPERVISOR.name
    probe = service.store.get_record(confirmed.probe_record_id)
    assert probe is not None and probe.status is RecordStatus.CONFIRMED_DUPLICATE
    assert probe.linked_to == confirmed.matched_record_id


def test_cannot_tell_escalates_to_a_supervisor(service: DedupService, fake: FakeFaceAnalyzer) -> None:
    case_id = _review_case(service, fake)
    service.claim_case(case_id, OFFICER)
    escalated = service.decide_case(case_id, CaseDecision.CANNOT_TELL, OFFICER, "unsure")
    assert escalated.escalated and escalated.status is CaseStatus.OPEN
    with pytest.raises(PermissionDenied):
        service.claim_case(case_id, Actor("otto", Role.OFFICER))
    with pytest.raises(PermissionDenied):
        service.decide_case(case_id, CaseDecision.SAME_PERSON, Actor("ada", Role.AUDITOR), "no")
    closed = service.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, SUPERVISOR, "two people")
    assert closed.status is CaseStatus.CLOSED
    probe = service.store.get_record(closed.probe_record_id)
    assert probe is not None and probe.status is RecordStatus.ENROLLED


def test_tenants_never_see_each_other(tmp_path: Path, fake: FakeFaceAnalyzer) -> None:
    data = tmp_path / "shared-registry"
    a, adapters_a = build_service(_settings(data, tenant="tenant-a"), analyzer=fake)
    case_id = _review_case(a, fake)  # first: its thresholds are those of a one-face gallery
    photo = fake.face(b"same-face", unit(fake.dim, 3))
    in_a = a.enroll(photo, InputRef("x.jpg", "APP-1"))
    assert in_a.outcome is Outcome.ENROLLED
    adapters_a.close()
    b, adapters_b = build_service(_settings(data, tenant="tenant-b"), analyzer=fake)
    try:
        in_b = b.enroll(photo, InputRef("x.jpg", "APP-1"))  # same bytes, same application id
        assert in_b.outcome is Outcome.ENROLLED and in_b.record_id != in_a.record_id
        assert [c.record_id for c in b.search(photo, top_k=5).candidates] == [in_b.record_id]
        assert b.store.list_cases(tenant="tenant-b") == []
        with pytest.raises(NotFound):
            b.decide_case(case_id, CaseDecision.DIFFERENT_PEOPLE, SUPERVISOR, "not ours")
        with pytest.raises(NotFound):
            b.erase(in_a.record_id or "", "dpo", "not ours")
        assert b.for_tenant("tenant-a").store.get_record(in_a.record_id or "") is not None
    finally:
        adapters_b.close()


def test_erasure_removes_template_photos_and_record_and_keeps_a_receipt(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    photo = fake.face(b"to-erase", unit(fake.dim, 0))
    record_id = service.enroll(photo, InputRef("e.jpg", "APP-1")).record_id or ""
    assert len(service.blobs.keys(f"{service.tenant}/{record_id}/")) == 2  # photo and aligned crop
    receipt = service.erase(record_id, "dpo", "request 42")
    assert receipt["vectors"] == 1 and receipt["blobs"] == 2 and receipt["records"] == 1
    assert service.store.get_record(record_id) is None
    assert service.blobs.keys(f"{service.tenant}/{record_id}/") == []
    assert service.search(photo, top_k=5).candidates == ()
    (erased,) = [e for e in service.store.audit_events() if e.action == "record.erased"]
    assert erased.actor == "dpo" and erased.details["reason"] == "request 42"
    assert "e.jpg" not in repr(erased.details)
    with pytest.raises(NotFound):
        service.erase(record_id, "dpo", "again")


def test_two_uploads_of_one_new_person_decided_at_once_are_reviewed_once(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    """The cloud's concurrency re-check: both inputs are searched before either is committed, so
    both are decided 'enrolled'; the second to complete finds the first and opens one case."""
    first = fake.face(b"twin-1", unit(fake.dim, 0))
    second = fake.face(b"twin-2", at_score(unit(fake.dim, 0), 0.98, 1))
    key_1 = service.stage(first, InputRef("1.jpg", "APP-1")).key
    key_2 = service.stage(second, InputRef("2.jpg", "APP-2")).key
    decision_1, decision_2 = service.search_staged(key_1), service.search_staged(key_2)
    assert decision_1.outcome is decision_2.outcome is Outcome.ENROLLED
    item_1 = service.complete_staged(key_1, decision_1)
    item_2 = service.complete_staged(key_2, decision_2)
    (case,) = service.store.list_cases(tenant=service.tenant)
    assert case.kind is Outcome.REVIEW and case.thresholds["reason"] == "enrolled concurrently"
    assert {case.probe_record_id, *(c.record_id for c in case.candidates)} == {
        item_1.record_id,
        item_2.record_id,
    }
    probe = service.store.get_record(case.probe_record_id)
    assert probe is not None and probe.status is RecordStatus.PENDING_REVIEW
    # A retry of either completion (the workflow retries tasks) opens nothing more.
    assert service.complete_staged(key_1, decision_1).record_id == item_1.record_id
    assert service.complete_staged(key_2, decision_2).record_id == item_2.record_id
    assert len(service.store.list_cases(tenant=service.tenant)) == 1


def test_a_case_opened_outside_enrollment_is_opened_once_in_its_own_tenant(
    service: DedupService, fake: FakeFaceAnalyzer
) -> None:
    """MOSIP's identify opens officers' cases through the review use case (open_new_case),
    not through the store: audited, the probe pending review, once per id, one tenant."""
    from dataclasses import replace

    from face_dedup.domain import Candidate, Case, utc_now

    probe = service.enroll(fake.face(b"p", unit(fake.dim, 0)), InputRef("p.jpg", "APP-P")).record_id or ""
    other = service.enroll(fake.face(b"o", unit(fake.dim, 1)), InputRef("o.jpg", "APP-O")).record_id or ""
    case = Case(
        case_id="case-outside-1",
        tenant=service.tenant,
        probe_record_id=probe,
        kind=Outcome.REVIEW,
        candidates=(Candidate(other, 0.5, None, "APP-O"),),
        status=CaseStatus.OPEN,
        created_at=utc_now(),
        thresholds={"band": "review"},
    )
    with pytest.raises(InvalidState):
        service.open_new_case(replace(case, tenant="another"), "mosip-abis", "MOSIP identify")
    assert service.open_new_case(case, "mosip-abis", "MOSIP identify") is True
    assert service.open_new_case(case, "mosip-abis", "MOSIP identify") is False  # asked again
    record = service.store.get_record(probe)
    assert record is not None and record.status is RecordStatus.PENDING_REVIEW
    (opened,) = [e for e in service.store.audit_events() if e.action == "case.opened"]
    assert opened.actor == "mosip-abis" and opened.details["case_id"] == "case-outside-1"


def test_the_core_takes_its_limits_from_service_config_not_settings(
    tmp_path: Path, fake: FakeFaceAnalyzer
) -> None:
    """The photo-size limit of an import and the policy for later photos come from the
    ServiceConfig the composition root builds (the use cases never read Settings)."""
    import json

    from face_dedup.adapters.private_files import private_report
    from face_dedup.importer import collect_inputs, run_import
    from face_dedup.record_templates import TemplatePolicy

    settings = Settings.load(
        {"FACE_DEDUP_DECODE_MAX_BYTES": "1000", "FACE_DEDUP_MAX_TEMPLATES": "2"},
        data_dir=tmp_path / "registry",
        models_dir=tmp_path / "no-models",
    )
    service, adapters = build_service(settings, analyzer=fake)
    try:
        assert service.config.templates == TemplatePolicy(2, settings.template_min_detection_score)
        assert service.config.max_input_bytes == 1000
        folder = tmp_path / "batch"
        folder.mkdir()
        (folder / "small.png").write_bytes(fake.face(b"s" * 1000, unit(fake.dim, 0)))
        (folder / "big.png").write_bytes(fake.face(b"b" * 1001, unit(fake.dim, 1)))
        report = tmp_path / "report.jsonl"
        run_import(service, collect_inputs(folder, None), report=private_report(report))
        lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
        outcomes = {Path(str(line["source"])).name: line for line in lines}
        assert outcomes["small.png"]["outcome"] == "enrolled"
        assert outcomes["big.png"]["reason"] == Reason.TOO_LARGE.value and fake.calls == 1
    finally:
        adapters.close()
