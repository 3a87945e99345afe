"""The decision policy: every rule that turns scores, the gallery size and an application's
history into an outcome, in one pure place. The use cases (enrollment, the workflow's search
step, the shadow pack, MOSIP identify), `face-dedup calibrate`, the group report and the
benchmarks all take their thresholds from `DecisionPolicy`, so none can drop a floor.

Following the target FPIR to an outcome: `DecisionPolicy.thresholds(gallery size)` (FPIR ->
per-comparison FMR for that size -> threshold from the measured impostor tail, never below the
floors), then `decide` (bands, the capped-search rule, the own-application rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from face_dedup.calibration import DedupThresholds, ImpostorTail, dedup_thresholds
from face_dedup.domain import Candidate
from face_dedup.outcomes import Outcome


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    candidates: tuple[Candidate, ...]  # at or above the review threshold, best first
    best_score: float | None
    # What the case and the audit say about how it was decided (own_application_mismatch,
    # too_many_candidates, ...): plain values, no template.
    notes: dict[str, Any] = field(default_factory=dict, compare=False)


def decide(
    candidates: Sequence[Candidate], thresholds: DedupThresholds, max_candidates: int, *, capped: bool = False
) -> Decision:
    """The bands. `capped`: the index listed only some of the faces above the review threshold
    (more than `max_candidates` are there). Never an automatic link then: a case for an officer,
    who sees that the list is incomplete (a face matching that many is suspect in itself)."""
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


class PolicySettings(Protocol):
    """The settings the policy is built from (`Settings` has them; the policy never reads it)."""

    @property
    def target_fpir(self) -> float: ...
    @property
    def duplicate_fpir(self) -> float: ...
    @property
    def review_floor_fmr(self) -> float: ...
    @property
    def duplicate_floor_fmr(self) -> float: ...
    @property
    def verify_fmr(self) -> float: ...
    @property
    def max_candidates(self) -> int: ...


@dataclass(frozen=True)
class DecisionPolicy:
    tail: ImpostorTail  # the model pack's measured impostor tail
    target_fpir: float  # review band: chance a new person is sent to review, at this gallery size
    duplicate_fpir: float  # auto-link band
    review_floor_fmr: float  # the review threshold never drops below this FMR's threshold
    duplicate_floor_fmr: float  # nor the auto-link threshold below this one's
    verify_fmr: float  # 1:1, against a photo of the same application
    max_candidates: int  # candidates listed on a case (more found: the search was capped)

    @classmethod
    def from_settings(cls, settings: PolicySettings, tail: ImpostorTail) -> DecisionPolicy:
        return cls(
            tail,
            settings.target_fpir,
            settings.duplicate_fpir,
            settings.review_floor_fmr,
            settings.duplicate_floor_fmr,
            settings.verify_fmr,
            settings.max_candidates,
        )

    @property
    def model_pack(self) -> str:
        return self.tail.model_pack

    def at_fpir(self, fpir: float) -> DecisionPolicy:
        """The same registry at another target FPIR (MOSIP's identify names one per request);
        the auto-link band never looser than the registry's, the floors unchanged."""
        return replace(self, target_fpir=fpir, duplicate_fpir=min(fpir, self.duplicate_fpir))

    # -- thresholds -----------------------------------------------------------------------

    def thresholds(self, gallery_size: int) -> DedupThresholds:
        """The review and auto-link thresholds for a search of `gallery_size` enrolled faces."""
        return dedup_thresholds(
            self.tail,
            gallery_size,
            self.target_fpir,
            self.duplicate_fpir,
            floor=self.tail.threshold_for_fmr(self.review_floor_fmr),
            duplicate_floor=self.tail.threshold_for_fmr(self.duplicate_floor_fmr),
        )

    @property
    def verify_threshold(self) -> float:
        return self.tail.threshold_for_fmr(self.verify_fmr)

    def verifies(self, score: float) -> bool:
        return score >= self.verify_threshold

    def describe(self, thresholds: DedupThresholds) -> dict[str, Any]:
        """What a case and the audit record about the thresholds in force."""
        return {
            "review": round(thresholds.review, 4),
            "duplicate": round(thresholds.duplicate, 4),
            "gallery_size": thresholds.gallery_size,
            "target_fpir": self.target_fpir,
            "review_fmr": thresholds.review_fmr,
            "model_pack": self.model_pack,
            "calibration": self.tail.source,
        }

    # -- the decision -----------------------------------------------------------------------

    def verified_by(self, own: Sequence[Candidate]) -> Decision | None:
        """Verify first: a photo matching its own application's enrolled face (1:1, at the verify
        threshold) is a verification, and nothing is searched. `own`: the application's other
        enrolled faces, scored against this photo."""
        if not own:
            return None
        best = max(own, key=lambda c: c.score)
        if not self.verifies(best.score):
            return None
        return Decision(Outcome.VERIFIED, (best,), best.score, self._verify_notes())

    def decide(
        self,
        found: Sequence[Candidate],
        thresholds: DedupThresholds,
        *,
        capped: bool = False,
        own: Sequence[Candidate] = (),
    ) -> Decision:
        """1:N, after `verified_by` said no. `found`: what the search listed at or above the
        review threshold; `capped`: it listed only some (too many candidates: a case, never an
        automatic link); `own`: the application's own enrolled faces, none of which matched. A
        photo that does not match its own application is never enrolled as someone new: a case,
        with the application's faces among the candidates."""
        banded = decide(found, thresholds, self.max_candidates, capped=capped)
        notes: dict[str, Any] = self._verify_notes() if own else {}
        if capped:  # said on the case, never silently truncated
            notes |= {"too_many_candidates": True, "candidates_listed": len(banded.candidates)}
        if not own:
            return replace(banded, notes=notes)
        listed = {c.record_id for c in banded.candidates}
        candidates = tuple(
            sorted(
                [*banded.candidates, *(c for c in own if c.record_id not in listed)], key=lambda c: -c.score
            )
        )
        outcome = Outcome.REVIEW if banded.outcome is Outcome.ENROLLED else banded.outcome
        return Decision(outcome, candidates, banded.best_score, {**notes, "own_application_mismatch": True})

    def _verify_notes(self) -> dict[str, Any]:
        return {"verify_threshold": round(self.verify_threshold, 4), "verify_fmr": self.verify_fmr}
