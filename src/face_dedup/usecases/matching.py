"""1:1 verification and 1:N search of one photo, deciding and enrolling nothing (audited)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.domain import Candidate, utc_now
from face_dedup.usecases.registry import SYSTEM_ACTOR, Registry


@dataclass(frozen=True)
class VerifyResult:
    score: float | None
    threshold: float
    fmr: float
    match: bool
    model_pack: str
    rejected: tuple[tuple[str, str, str], ...] = ()  # (which, reason, message)


@dataclass(frozen=True)
class SearchResult:
    candidates: tuple[Candidate, ...]
    review_threshold: float
    duplicate_threshold: float
    gallery_size: int
    rejection: Rejection | None = None


class Matching:
    def __init__(self, registry: Registry) -> None:
        self.r = registry

    def verify(self, first: bytes, second: bytes, actor: str = SYSTEM_ACTOR) -> VerifyResult:
        r = self.r
        threshold = r.policy.verify_threshold
        engine = r.analyzer()
        results = [engine.process(first), engine.process(second)]
        rejected = tuple(
            (name, x.reason.value, x.message)
            for name, x in zip(("first", "second"), results, strict=True)
            if isinstance(x, Rejection)
        )
        score = None
        a, b = results
        if isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate):
            score = float(np.dot(a.embedding, b.embedding))
        match = score is not None and r.policy.verifies(score)
        r.store.append_audit(
            r.event(
                "verify",
                actor,
                utc_now(),
                match=match,
                score=None if score is None else round(score, 4),
                threshold=round(threshold, 4),
                fmr=r.policy.verify_fmr,
                model_pack=r.model_pack,
                rejected=[x[1] for x in rejected],
            )
        )
        return VerifyResult(score, threshold, r.policy.verify_fmr, match, r.model_pack, rejected)

    def search(self, data: bytes, top_k: int, actor: str = SYSTEM_ACTOR) -> SearchResult:
        r = self.r
        thresholds = r.thresholds()
        analysis = r.analyzer().process(data)
        if isinstance(analysis, Rejection):
            return SearchResult(
                (), thresholds.review, thresholds.duplicate, thresholds.gallery_size, analysis
            )
        hits = r.index.search(analysis.embedding, tenant=r.tenant, model_pack=r.model_pack, k=top_k)
        candidates = tuple(sorted(r.describe(hits, analysis.embedding), key=lambda c: -c.score))
        r.store.append_audit(
            r.event(
                "search",
                actor,
                utc_now(),
                top_k=top_k,
                model_pack=r.model_pack,
                review_threshold=round(thresholds.review, 4),
                results=[{"record_id": c.record_id, "score": round(c.score, 4)} for c in candidates],
            )
        )
        return SearchResult(candidates, thresholds.review, thresholds.duplicate, thresholds.gallery_size)
