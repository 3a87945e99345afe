"""Erasing a person removes their file name and application id from everyone else's cases and
import items, and no case can be confirmed against the erased record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from face_dedup.bootstrap import build_service
from face_dedup.domain import Actor, CaseDecision, CaseStatus, RecordStatus, Role
from face_dedup.errors import InvalidState
from face_dedup.service import DedupService, InputRef, content_digest
from face_dedup.settings import Settings
from tests.unit.registry_worker import template

OFFICER = Actor("officer-1", Role.OFFICER)
SUPERVISOR = Actor("supervisor-1", Role.SUPERVISOR)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DedupService]:
    service, adapters = build_service(Settings.load(data_dir=tmp_path / "registry"), with_engine=False)
    yield service
    adapters.close()


def _register(service: DedupService, name: str, person: int, variant: int, noise: float) -> str:
    face = template(service.settings, person, variant, noise)
    photo = f"photo {person}/{variant}".encode() * 8
    item = service.register(InputRef(f"{name}.jpg", name), content_digest(photo), face, photo)
    assert item.record_id is not None
    return item.record_id


def _everything(service: DedupService) -> str:
    cases = service.store.list_cases(tenant="default", limit=1000)
    items = [service.store.get_import_item(k) for k in _item_keys(service)]
    return json.dumps([c.candidates for c in cases] + [i.candidates for i in items if i], default=str)


def _item_keys(service: DedupService) -> list[str]:
    db = service.store._db  # type: ignore[attr-defined]  # the SQLite adapter's own table
    return [row[0] for row in db.execute("SELECT key FROM import_items")]


def test_a_case_losing_its_only_candidate_is_closed_and_names_are_redacted(registry: DedupService) -> None:
    first = _register(registry, "MARIA-GOMEZ-1", 1, 0, 0.0)
    second = _register(registry, "APP-2", 1, 1, 0.3)  # the same person again: a case against the first
    case = registry.store.list_cases(tenant="default")[0]
    assert [c.record_id for c in case.candidates] == [first]
    assert "MARIA-GOMEZ-1" in _everything(registry)

    receipt = registry.erase(first, "dpo", "request 1")

    assert receipt["cases_resolved"] == 1
    assert "MARIA-GOMEZ-1" not in _everything(registry)
    closed = registry.store.get_case(case.case_id)
    assert closed is not None
    assert closed.status is CaseStatus.CLOSED
    assert closed.candidates == ()
    assert "only candidate was erased" in (closed.comment or "")
    probe = registry.store.get_record(second)
    assert probe is not None and probe.status is RecordStatus.ENROLLED and probe.linked_to is None
    with pytest.raises(InvalidState):
        registry.decide_case(case.case_id, CaseDecision.SAME_PERSON, OFFICER, "too late")


def test_a_decided_match_that_is_erased_goes_back_to_the_queue(registry: DedupService) -> None:
    first = _register(registry, "APP-1", 2, 0, 0.0)
    second = _register(registry, "APP-2", 2, 1, 0.2)  # flagged against the first
    third = _register(registry, "APP-3", 2, 2, 0.2)  # flagged against both
    case = next(c for c in registry.store.list_cases(tenant="default") if c.probe_record_id == third)
    assert {c.record_id for c in case.candidates} == {first, second}
    registry.decide_case(case.case_id, CaseDecision.SAME_PERSON, OFFICER, "same", matched_record_id=first)

    registry.erase(first, "dpo", "request 2")

    requeued = registry.store.get_case(case.case_id)
    assert requeued is not None
    assert requeued.status is CaseStatus.OPEN
    assert requeued.decision is None and requeued.matched_record_id is None
    assert [c.record_id for c in requeued.candidates] == [second]
    with pytest.raises(InvalidState):  # never confirmable against the missing record
        registry.confirm_case(case.case_id, SUPERVISOR, True, "ok")
    assert requeued.history[-1]["action"] == "requeued"
