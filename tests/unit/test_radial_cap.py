"""Issue 15: a de-duplication search whose "everything above the threshold" hits its size cap
is escalated to a case that says so, on the service's real decision path."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.domain import ImportItem, Outcome, Record, RecordStatus, StagedInput, utc_now
from face_dedup.ports import EnrollmentCommit, IndexEntry
from face_dedup.service import DedupService


def _unit(vector: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _enroll(service: DedupService, record_id: str, vector: NDArray[np.float32]) -> None:
    now = utc_now()
    record = Record(
        record_id,
        service.tenant,
        service.model_pack,
        f"APP-{record_id}",
        f"/in/{record_id}.jpg",
        "0" * 64,
        RecordStatus.ENROLLED,
        now,
        vector,
    )
    item = ImportItem(
        f"key-{record_id}",
        service.tenant,
        record.source,
        record.application_id,
        "0" * 64,
        Outcome.ENROLLED,
        now,
        record_id=record_id,
    )
    service.store.commit(EnrollmentCommit(item=item, record=record))
    service.index.add([IndexEntry(record_id, service.tenant, service.model_pack, vector)])


def _staged(service: DedupService, vector: NDArray[np.float32]) -> StagedInput:
    return StagedInput(
        "probe-key", "probe", service.tenant, service.model_pack, "/in/probe.jpg", None, "1" * 64, vector
    )


def test_more_faces_above_the_threshold_than_listed_is_a_case_that_says_so(service: DedupService) -> None:
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=128))
    limit = service.settings.max_candidates
    for i in range(limit + 3):  # every one of them far above the duplicate threshold
        _enroll(service, f"twin-{i}", _unit(base + 0.01 * rng.normal(size=128)))
    decision = service.decide_staged(_staged(service, base))
    assert decision.outcome is Outcome.REVIEW  # not an automatic link, however high the scores
    assert len(decision.candidates) == limit
    assert decision.thresholds["too_many_candidates"] is True
    assert decision.thresholds["candidates_listed"] == limit


def test_a_complete_list_is_decided_as_before(service: DedupService) -> None:
    rng = np.random.default_rng(1)
    base = _unit(rng.normal(size=128))
    for i in range(3):
        _enroll(service, f"twin-{i}", _unit(base + 0.01 * rng.normal(size=128)))
    decision = service.decide_staged(_staged(service, base))
    assert decision.outcome is Outcome.DUPLICATE
    assert len(decision.candidates) == 3
    assert "too_many_candidates" not in decision.thresholds
