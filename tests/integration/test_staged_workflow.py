"""The serverless workflow's steps, one at a time, on the embedded adapters: stage (ingest),
search + decide, enroll or open a case, with the race between concurrent enrollments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from face_dedup.domain import Outcome, RecordStatus
from face_dedup.errors import TransientError
from face_dedup.service import DedupService, InputRef, StagedDecision

pytestmark = pytest.mark.shared_data

A1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
A2 = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
B1 = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"


def stage(service: DedupService, faces_root: Path, name: str, application: str) -> str:
    result = service.stage((faces_root / name).read_bytes(), InputRef(name, application))
    assert result.item is None, "expected the input to wait for the workflow"
    return result.key


def test_steps_decide_like_the_one_call_path(service: DedupService, faces_root: Path) -> None:
    first = stage(service, faces_root, A1, "APP-1")
    decision = service.search_staged(first)
    assert decision.outcome is Outcome.ENROLLED
    roundtrip = StagedDecision.from_dict(decision.to_dict())  # what the workflow carries between tasks
    assert roundtrip == decision
    enrolled = service.complete_staged(first, roundtrip)
    assert enrolled.outcome is Outcome.ENROLLED
    assert service.store.get_staged(first) is None  # the parked template is gone once decided
    assert service.complete_staged(first, roundtrip) == enrolled  # a retried task changes nothing

    second = stage(service, faces_root, A2, "APP-2")
    decided = service.search_staged(second)
    assert decided.outcome in (Outcome.REVIEW, Outcome.DUPLICATE)
    assert decided.candidates[0].record_id == enrolled.record_id
    item = service.complete_staged(second, decided)
    assert item.case_id and service.store.get_case(item.case_id) is not None

    again = service.stage((faces_root / A2).read_bytes(), InputRef(A2, "APP-2"))
    assert again.item == item  # the same upload event, delivered again


def test_rejected_upload_is_final_at_stage(service: DedupService) -> None:
    result = service.stage(b"GIF89a broken", InputRef("uploads/broken.gif", "APP-9"))
    assert result.item is not None and result.item.outcome is Outcome.REJECTED
    assert result.item.reason == "UNDECODABLE"


def test_concurrent_enrollments_of_one_person_end_in_one_case(
    service: DedupService, faces_root: Path
) -> None:
    x = stage(service, faces_root, A1, "APP-1")
    y = stage(service, faces_root, A2, "APP-2")
    other = stage(service, faces_root, B1, "APP-3")
    # Both searches run before either enrollment is written: both find nobody.
    decisions = {key: service.search_staged(key) for key in (x, y, other)}
    assert all(d.outcome is Outcome.ENROLLED for d in decisions.values())
    items = {key: service.complete_staged(key, decisions[key]) for key in (x, y, other)}

    cases = service.store.list_cases(tenant=service.tenant, limit=10)
    assert len(cases) == 1
    (case,) = cases
    assert {case.probe_record_id, case.candidates[0].record_id} == {items[x].record_id, items[y].record_id}
    probe = service.store.get_record(case.probe_record_id)
    assert probe is not None and probe.status is RecordStatus.PENDING_REVIEW
    assert case.thresholds["reason"] == "enrolled concurrently"
    unrelated = service.store.get_record(items[other].record_id or "")
    assert unrelated is not None and unrelated.status is RecordStatus.ENROLLED


def test_a_retried_completion_finishes_the_index_write(service: DedupService, faces_root: Path) -> None:
    """The workflow retries `complete` when the index is briefly unavailable: the commit of the
    first attempt stands, and the retry still writes the template to the index."""
    key = stage(service, faces_root, A1, "APP-1")
    decision = service.search_staged(key)
    real_add = service.index.add
    calls = {"n": 0}

    def flaky_add(entries: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientError("index unavailable (injected)")
        real_add(entries)

    service.index.add = flaky_add  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        service.complete_staged(key, decision)
    assert service.store.get_import_item(key) is not None and service.gallery_size() == 0
    item = service.complete_staged(key, decision)  # the workflow's retry
    assert item.outcome is Outcome.ENROLLED and service.gallery_size() == 1
    assert service.store.get_staged(key) is None
    assert service.complete_staged(key, decision) == item and calls["n"] == 2
