from __future__ import annotations

from face_dedup.calibration import DedupThresholds
from face_dedup.decision import decide
from face_dedup.domain import Candidate, Outcome

T = DedupThresholds(
    review=0.4, duplicate=0.6, gallery_size=10, review_fmr=1e-3, duplicate_fmr=1e-6, extrapolated=False
)


def test_no_candidate_above_review_enrolls() -> None:
    decision = decide([Candidate("r1", 0.39)], T, 5)
    assert decision.outcome is Outcome.ENROLLED
    assert decision.candidates == ()
    assert decision.best_score == 0.39


def test_between_thresholds_is_review_with_ranked_candidates() -> None:
    decision = decide([Candidate("r1", 0.45), Candidate("r2", 0.55), Candidate("r3", 0.1)], T, 5)
    assert decision.outcome is Outcome.REVIEW
    assert [c.record_id for c in decision.candidates] == ["r2", "r1"]


def test_above_duplicate_threshold_is_duplicate_and_keeps_others() -> None:
    decision = decide([Candidate("r1", 0.45), Candidate("r2", 0.61)], T, 5)
    assert decision.outcome is Outcome.DUPLICATE
    assert [c.record_id for c in decision.candidates] == ["r2", "r1"]


def test_candidate_list_is_capped() -> None:
    many = [Candidate(f"r{i}", 0.5 + i / 1000) for i in range(20)]
    assert len(decide(many, T, 3).candidates) == 3


def test_threshold_is_inclusive() -> None:
    assert decide([Candidate("r1", 0.4)], T, 5).outcome is Outcome.REVIEW
    assert decide([Candidate("r1", 0.6)], T, 5).outcome is Outcome.DUPLICATE


def test_a_capped_list_is_a_case_never_an_automatic_link() -> None:
    """Issue 15: the index cut the list (more faces above the review threshold than listed)."""
    many = [Candidate(f"r{i}", 0.9 - i / 100) for i in range(5)]
    decision = decide(many, T, 5, capped=True)
    assert decision.outcome is Outcome.REVIEW
    assert [c.record_id for c in decision.candidates] == [f"r{i}" for i in range(5)]
    assert decide(many, T, 5).outcome is Outcome.DUPLICATE  # the same list, complete
