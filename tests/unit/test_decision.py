from __future__ import annotations

from face_dedup.calibration import DedupThresholds, ImpostorTail
from face_dedup.decision import DecisionPolicy, decide
from face_dedup.domain import Candidate, Outcome
from face_dedup.outcomes import DECIDED, OPENS_CASE, case_to_notify
from face_dedup.settings import Settings

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


# -- DecisionPolicy: the one place every threshold and outcome rule lives --------------------

TAIL = ImpostorTail("pack-x", "test", 10**6, ((-1.0, 0.2), (-3.0, 0.35), (-6.0, 0.55)))
POLICY = DecisionPolicy(
    TAIL,
    target_fpir=0.01,
    duplicate_fpir=1e-4,
    review_floor_fmr=1e-3,
    duplicate_floor_fmr=1e-6,
    verify_fmr=1e-3,
    max_candidates=3,
)


def test_policy_thresholds_keep_both_floors_at_any_gallery_size() -> None:
    for size in (1, 10, 10_000, 10**7):
        t = POLICY.thresholds(size)
        assert t.review >= TAIL.threshold_for_fmr(POLICY.review_floor_fmr)
        # the copies in calibrate and bench/accuracy once dropped this one
        assert t.duplicate >= TAIL.threshold_for_fmr(POLICY.duplicate_floor_fmr)
        assert t.review <= t.duplicate
    assert POLICY.thresholds(10**7).review > POLICY.thresholds(10).review  # rises with the gallery


def test_policy_from_settings_is_the_settings_rule() -> None:
    settings = Settings.load({})
    policy = DecisionPolicy.from_settings(settings, TAIL)
    assert (policy.target_fpir, policy.duplicate_floor_fmr, policy.max_candidates) == (
        settings.target_fpir,
        settings.duplicate_floor_fmr,
        settings.max_candidates,
    )


def test_verify_first_then_own_application_mismatch_is_a_case() -> None:
    t = POLICY.thresholds(100)
    own_match = [Candidate("own", POLICY.verify_threshold)]
    verified = POLICY.verified_by(own_match)
    assert verified is not None and verified.outcome is Outcome.VERIFIED
    assert verified.candidates == (own_match[0],) and verified.notes["verify_fmr"] == 1e-3
    own_other = [Candidate("own", POLICY.verify_threshold - 0.01)]
    assert POLICY.verified_by(own_other) is None
    assert POLICY.verified_by([]) is None
    # nobody else found: still a case, never enrolled as someone new
    decision = POLICY.decide([], t, own=own_other)
    assert decision.outcome is Outcome.REVIEW and decision.candidates == tuple(own_other)
    assert decision.notes["own_application_mismatch"] is True
    # someone else found above the duplicate threshold: the band stands, own face listed too
    other = Candidate("other", t.duplicate + 0.01)
    both = POLICY.decide([other], t, own=own_other)
    assert both.outcome is Outcome.DUPLICATE
    assert [c.record_id for c in both.candidates] == ["other", "own"]


def test_a_capped_search_is_never_an_automatic_link() -> None:
    t = POLICY.thresholds(100)
    found = [Candidate(f"r{i}", t.duplicate + 0.01) for i in range(3)]
    assert POLICY.decide(found, t).outcome is Outcome.DUPLICATE
    capped = POLICY.decide(found, t, capped=True)
    assert capped.outcome is Outcome.REVIEW
    assert capped.notes == {"too_many_candidates": True, "candidates_listed": 3}


def test_mosip_fpir_never_loosens_the_auto_link_band() -> None:
    looser = POLICY.at_fpir(0.1)
    assert looser.duplicate_fpir == POLICY.duplicate_fpir and looser.target_fpir == 0.1
    assert POLICY.at_fpir(1e-6).duplicate_fpir == 1e-6


def test_every_outcome_the_policy_produces_is_one_the_workflow_branches_on() -> None:
    t = POLICY.thresholds(100)
    produced = {
        POLICY.decide([], t).outcome,
        POLICY.decide([Candidate("a", t.review)], t).outcome,
        POLICY.decide([Candidate("a", t.duplicate)], t).outcome,
        POLICY.decide([], t, own=[Candidate("own", 0.0)]).outcome,
    }
    verified = POLICY.verified_by([Candidate("own", 1.0)])
    assert verified is not None
    produced.add(verified.outcome)
    assert produced == set(DECIDED)


def test_officers_are_told_of_cases_only() -> None:
    assert [o for o in Outcome if case_to_notify(o, "case-1")] == list(OPENS_CASE)
    assert case_to_notify(Outcome.REVIEW, None) is None
    assert case_to_notify("duplicate", "case-1") == "case-1"


def test_no_new_copy_of_the_threshold_rule_outside_the_policy() -> None:
    """The copies in calibrate and bench/accuracy dropped the duplicate floor: thresholds come
    from DecisionPolicy. The two left compute only the review threshold from raw numbers (the
    planner's sweep over sizes, a benchmark's fixed operating point): listed, so a new one fails."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    allowed = {"src/face_dedup/decision.py", "src/face_dedup/planner.py", "bench/index_recall.py"}
    callers = set()
    for path in [
        *(root / "src").rglob("*.py"),
        *(root / "bench").rglob("*.py"),
        *(root / "functions").rglob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if name == "dedup_thresholds":
                    callers.add(path.relative_to(root).as_posix())
    assert "src/face_dedup/decision.py" in callers  # the scan sees the policy's own call
    assert callers <= allowed, f"thresholds assembled outside DecisionPolicy: {sorted(callers - allowed)}"
