"""The de-duplication decision: pure, given scored candidates and the thresholds in force."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from face_dedup.calibration import DedupThresholds
from face_dedup.domain import Candidate, Outcome


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    candidates: tuple[Candidate, ...]  # at or above the review threshold, best first
    best_score: float | None


def decide(
    candidates: Sequence[Candidate], thresholds: DedupThresholds, max_candidates: int, *, capped: bool = False
) -> Decision:
    """`capped`: the index listed only some of the faces above the review threshold (more than
    `max_candidates` are there). Never an automatic link then: a case for an officer, who
    sees that the list is incomplete (a face matching that many is suspect in itself)."""
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    flagged = tuple(c for c in ranked if c.score >= thresholds.review)[:max_candidates]
    best = ranked[0].score if ranked else None
    if not flagged:
        return Decision(Outcome.ENROLLED, (), best)
    if capped:
        return Decision(Outcome.REVIEW, flagged, best)
    if flagged[0].score >= thresholds.duplicate:
        return Decision(Outcome.DUPLICATE, flagged, best)
    return Decision(Outcome.REVIEW, flagged, best)
