"""Several templates per record (issue 11): what a template is, the fusion rule, the score
calibration it needs, and the policy for adding one. Pure: no I/O, no models.

Fusion rule: the CENTROID. A record's index vector (`Record.embedding`) is the normalised mean
of its templates, recomputed whenever a template is added or replaced, so the index keeps one
entry per record and a search's score against a record is the centroid score. Measured on the
LFW development photos (bench/multi_template.py, BENCHMARKS.md "Several photos per person"):
at a per-record FMR of 1e-5 the centroid of up to 2 photos found 98.45% of duplicates, the max
over the templates 97.74%, one photo 93.72%; at 1e-3 they were even. Max would also need one
index entry per template (the gallery size for the thresholds would then count templates).

Calibration: a centroid is closer to the person's mean face than any one photo, and so to the
people who resemble them: the thresholds calibrated on one-template records (`calibrate`) let
centroid records through 1.4x-2.6x as often (bench/centroid_calibration.py). A record of T
templates therefore has its centroid score lowered by the measured offset for T before it is
compared with any threshold (1:N bands and the 1:1 verify threshold alike), which brought the
realised FMR back to 0.8x-1.1x the target on the people the offset was not measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import FaceDedupError


class TemplateSource(StrEnum):
    ENROLLMENT = "enrollment"  # the photo the record was enrolled from: template 1, never replaced
    VERIFIED = "verified"  # a later photo that matched the record 1:1 (e.g. a selfie at a visit)
    RENEWAL = "renewal"  # a later photo taken when a document or card was renewed


@dataclass(frozen=True)
class Template:
    """One photo's template held by a record. `number` counts up from 1 (the enrollment photo)
    and is never reused, so the blob keys of a replaced template never name its successor."""

    record_id: str
    number: int
    model_pack: str
    source: TemplateSource
    captured_at: str  # when the photo was taken (as given), else when it was added
    added_at: str
    quality: dict[str, Any]  # the engine's measures: no biometric data
    embedding: NDArray[np.float32] = field(repr=False)


# Offset subtracted from a T-template record's centroid score before any threshold (T >= 2),
# the largest offset measured on either half of the people at FMR 1e-3, 1e-4 and 1e-5
# (bench/centroid_calibration.py on the LFW development photos, 2026-12-02; T=2: +0.0069 to
# +0.0185, T=3: +0.0012 to +0.0255, T=5: +0.0084 to +0.0250). Rounded up: conservative.
CENTROID_SCORE_OFFSET: dict[int, float] = {1: 0.0, 2: 0.019, 3: 0.026}
# Measured up to 5 templates (largest offset 0.0250): records of 4+ use the 3-template offset.
MAX_MEASURED_TEMPLATES = 5


# Two templates this close come from the same photo (different photos of one person score
# well below: the highest of the LFW development genuine pairs, different photos, is 0.966).
# Not 0.9999: one photo's templates from two embedder runtimes (onnxruntime fp32 and OpenVINO
# bf16, vision/runtimes.py; a registry may hold both) score down to 0.9984 (bench/bf16_partition.py).
SAME_PHOTO_SCORE = 0.995


# A capture date may be a local date ahead of UTC (up to +14:00), never later than that.
CAPTURE_CLOCK_SKEW = timedelta(days=1)


def _instant(value: str) -> datetime:
    """An ISO 8601 date or time as an aware instant (a date or naive time is taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TemplateRefused("bad_capture_date", f"{value!r} is not an ISO 8601 date") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def score_offset(template_count: int) -> float:
    if template_count < 1:
        raise ValueError("a record holds at least one template")
    if template_count > MAX_MEASURED_TEMPLATES:
        raise ValueError(
            f"the calibration offset is measured up to {MAX_MEASURED_TEMPLATES} templates per record"
        )
    return CENTROID_SCORE_OFFSET[min(template_count, 3)]


def calibrated_score(raw: float, template_count: int) -> float:
    """The score a decision compares with its thresholds: the centroid's cosine, held to the
    one-template calibration's false-match rate."""
    return raw - score_offset(template_count)


def centroid(vectors: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    """The normalised mean of unit templates (all of one model pack)."""
    if not vectors:
        raise ValueError("a centroid needs at least one template")
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    mean = stacked.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("templates that cancel out have no centroid")
    return np.asarray(mean / norm, dtype=np.float32)


class TemplateRefused(FaceDedupError):
    """Why a photo is not added to a record; `reason` is a stable code for the CLI and API."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TemplatePolicy:
    max_templates: int = 3
    # The photo must have passed every enrollment quality check AND its detector confidence
    # must reach this (stricter than the enrollment floor, 0.75): a template is kept for years.
    min_detection_score: float = 0.85

    def __post_init__(self) -> None:
        if not 1 <= self.max_templates <= MAX_MEASURED_TEMPLATES:
            raise ValueError(f"max_templates must be between 1 and {MAX_MEASURED_TEMPLATES} (measured)")


@dataclass(frozen=True)
class TemplatePlan:
    """What adding one template does: the record's templates afterwards, the template it
    replaces (its blobs must go), and the new index vector."""

    templates: tuple[Template, ...]
    added: Template
    replaced: Template | None
    centroid: NDArray[np.float32] = field(repr=False)


def plan_addition(
    policy: TemplatePolicy,
    *,
    record_status: str,
    existing: Sequence[Template],
    new: Template,
    verify_score: float,
    verify_threshold: float,
    rival_record_ids: Sequence[str],
) -> TemplatePlan:
    """Decide whether `new` joins a record holding `existing` (oldest first). Refuses (raises
    TemplateRefused) unless: the record is enrolled and not waiting for an officer; the photo
    matches the record 1:1 at the verify threshold (its calibrated score); its detector
    confidence reaches the floor; and it matches no OTHER record at the review threshold (an
    unreviewed duplicate is never added: that is an officer's case); and it matches the
    enrollment photo itself at the verify threshold (no drift away from the enrolled person).
    When the record is full the oldest template that is not the enrollment photo is replaced."""
    if record_status != "enrolled":
        raise TemplateRefused(
            "record_not_enrolled",
            f"the record is {record_status}: only an enrolled record with no open case takes new photos",
        )
    if new.source is TemplateSource.ENROLLMENT:
        raise TemplateRefused("bad_source", "only the enrollment photo is an enrollment template")
    if not existing:
        raise TemplateRefused("no_templates", "the record holds no template to verify against")
    if _instant(new.captured_at) > _instant(new.added_at) + CAPTURE_CLOCK_SKEW:
        raise TemplateRefused(
            "captured_in_future", f"the capture date {new.captured_at} is after today: check the date"
        )
    if verify_score < verify_threshold:
        raise TemplateRefused(
            "no_verified_match",
            f"the photo does not match the record 1:1 (score {verify_score:.4f} below the verify "
            f"threshold {verify_threshold:.4f})",
        )
    # Anchored to the enrollment photo too, not only to the centroid: a lookalike's photo that
    # got in once pulls the centroid towards its owner, and without the anchor that owner's next
    # photos would match the centroid ever more easily until the record is mostly theirs
    # (bench/template_drift.py --people 400 on the 359 LFW dev people with 3+ photos, each
    # impostor's best of 6 photos: of the 39 whose first photo passed, 39 got a second in
    # against the centroid alone, 3 with the anchor; genuine third photos accepted: 352 of
    # 359 without, 346 with).
    anchor = min(existing, key=lambda t: t.number)
    anchor_score = float(np.dot(anchor.embedding, new.embedding))  # one template: no offset
    if anchor_score < verify_threshold:
        raise TemplateRefused(
            "no_match_with_enrollment_photo",
            f"the photo does not match the record's enrollment photo 1:1 (score {anchor_score:.4f} "
            f"below the verify threshold {verify_threshold:.4f})",
        )
    detection = new.quality.get("detector_score")
    if not isinstance(detection, int | float) or detection < policy.min_detection_score:
        shown = "not measured" if not isinstance(detection, int | float) else f"{detection:.3f}"
        raise TemplateRefused(
            "below_quality_floor",
            f"the photo's detector confidence ({shown}) is below the floor for a kept template "
            f"({policy.min_detection_score})",
        )
    if rival_record_ids:
        raise TemplateRefused(
            "matches_another_record",
            f"the photo also matches {len(rival_record_ids)} other record(s) at the review threshold: "
            "enroll it as a submission so an officer reviews it",
        )
    if any(t.model_pack != new.model_pack for t in existing):
        raise TemplateRefused("pack_mismatch", "the record's templates are in another model pack")
    # The same photo again (a resubmission or a retried request) would only weigh it twice.
    if any(float(np.dot(t.embedding, new.embedding)) >= SAME_PHOTO_SCORE for t in existing):
        raise TemplateRefused("already_held", "the record already holds this photo")
    kept = list(existing)
    replaced = None
    if len(kept) >= policy.max_templates:
        replaceable = [t for t in kept if t.source is not TemplateSource.ENROLLMENT]
        if not replaceable:
            raise TemplateRefused("record_full", "the record is full and holds only enrollment templates")
        replaced = min(replaceable, key=lambda t: (t.added_at, t.number))
        kept.remove(replaced)
    templates = (*kept, new)
    return TemplatePlan(templates, new, replaced, centroid([t.embedding for t in templates]))
