"""Error rates and thresholds: measured from scores, never assumed.

1:1 verification compares one pair, so its threshold follows a per-comparison false-match
rate (FMR). 1:N de-duplication compares each new person with everyone enrolled, so the chance
of at least one false match (the false-positive identification rate, FPIR) grows with the
gallery: FPIR = 1 - (1 - FMR)^N, about N x FMR. The review threshold therefore follows a
target FPIR for the current gallery size: it rises as the registry grows.

The impostor tail (which threshold gives which FMR) is measured on labelled photos: shipped
with each model pack from the shared LFW development folds, or re-measured on a registry's own
photos with `face-dedup calibrate --save`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import ConfigError

FloatArray = NDArray[np.floating]


@dataclass(frozen=True)
class ImpostorTail:
    """Per-comparison FMR as a function of the cosine threshold, from measured impostor scores.

    `points` are (log10 FMR, threshold) pairs, FMR decreasing. Below the smallest measured FMR
    the threshold is extrapolated linearly in log10 FMR from the last measured decade (the
    tail of cosine impostor scores is close to exponential there); `measured_min_fmr` says
    where the measurement ends so reports can say when a threshold is an extrapolation.
    """

    model_pack: str
    source: str
    impostor_pairs: int
    points: tuple[tuple[float, float], ...]

    @property
    def measured_min_fmr(self) -> float:
        return 10 ** self.points[-1][0]

    def threshold_for_fmr(self, fmr: float) -> float:
        if not 0 < fmr < 1:
            raise ValueError(f"FMR must be in (0, 1), got {fmr}")
        log_fmr = math.log10(fmr)
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        if log_fmr >= xs[0]:
            return ys[0]
        if log_fmr <= xs[-1]:
            (x0, y0), (x1, y1) = self.points[-2], self.points[-1]
            slope = (y1 - y0) / (x1 - x0)
            return min(1.0, y1 + slope * (log_fmr - x1))
        # xs decreasing: interpolate on the reversed sequences
        return float(np.interp(log_fmr, xs[::-1], ys[::-1]))

    def fmr_at(self, threshold: float) -> float:
        """Inverse of threshold_for_fmr (same interpolation and extrapolation)."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        if threshold <= ys[0]:
            return float(10 ** xs[0])
        if threshold >= ys[-1]:
            (x0, y0), (x1, y1) = self.points[-2], self.points[-1]
            slope = (x1 - x0) / (y1 - y0)
            return float(10 ** (x1 + slope * (threshold - y1)))
        return float(10 ** np.interp(threshold, ys, xs))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ImpostorTail:
        raw = json.loads(text)
        points = tuple((float(a), float(b)) for a, b in raw["points"])
        if len(points) < 2 or any(points[i][0] <= points[i + 1][0] for i in range(len(points) - 1)):
            raise ConfigError("calibration points must be at least two, with FMR strictly decreasing")
        return cls(str(raw["model_pack"]), str(raw["source"]), int(raw["impostor_pairs"]), points)

    @classmethod
    def load(cls, path: Path) -> ImpostorTail:
        return cls.from_json(path.read_text(encoding="utf-8"))


def fmr_for_fpir(fpir: float, gallery_size: int) -> float:
    """Per-comparison FMR that gives the target FPIR against `gallery_size` enrolled faces."""
    n = max(1, gallery_size)
    return -math.expm1(math.log1p(-fpir) / n)


@dataclass(frozen=True)
class DedupThresholds:
    review: float  # at or above: a case for review
    duplicate: float  # at or above: linked as a likely duplicate (still reviewable)
    gallery_size: int
    review_fmr: float
    duplicate_fmr: float
    extrapolated: bool  # the FMR is below what the calibration measured


def dedup_thresholds(
    tail: ImpostorTail,
    gallery_size: int,
    target_fpir: float,
    duplicate_fpir: float,
    floor: float = 0.0,
    duplicate_floor: float = 0.0,
) -> DedupThresholds:
    review_fmr = fmr_for_fpir(target_fpir, gallery_size)
    duplicate_fmr = fmr_for_fpir(duplicate_fpir, gallery_size)
    review = max(floor, tail.threshold_for_fmr(review_fmr))
    duplicate = max(review, duplicate_floor, tail.threshold_for_fmr(duplicate_fmr))
    return DedupThresholds(
        review,
        duplicate,
        gallery_size,
        review_fmr,
        duplicate_fmr,
        extrapolated=review_fmr < tail.measured_min_fmr,
    )


# ---------------------------------------------------------------------------------------------
# Metrics from scores


def threshold_at_far(impostor: FloatArray, far: float) -> float:
    """Smallest threshold whose false-accept rate (score >= t) is at most `far`."""
    scores = np.sort(np.asarray(impostor, dtype=np.float64))
    allowed = math.floor(far * len(scores))
    if allowed >= len(scores):
        return float(scores[0])
    # scores[-allowed-1] would be accepted if t equals it; step just above it.
    return float(np.nextafter(scores[len(scores) - allowed - 1], np.inf))


def tar_at_far(genuine: FloatArray, impostor: FloatArray, far: float) -> tuple[float, float]:
    threshold = threshold_at_far(impostor, far)
    return float(np.mean(np.asarray(genuine) >= threshold)), threshold


def equal_error_rate(genuine: FloatArray, impostor: FloatArray) -> tuple[float, float]:
    """(EER, threshold) where false-reject and false-accept rates cross."""
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    candidates = np.unique(np.concatenate([genuine, impostor]))
    frr = np.searchsorted(genuine, candidates, side="left") / len(genuine)
    far = 1.0 - np.searchsorted(impostor, candidates, side="left") / len(impostor)
    index = int(np.argmin(np.abs(frr - far)))
    return float((frr[index] + far[index]) / 2), float(candidates[index])


def best_accuracy_threshold(scores: FloatArray, same: NDArray[np.bool_]) -> float:
    order = np.argsort(scores)
    sorted_scores, sorted_same = np.asarray(scores)[order], np.asarray(same)[order]
    # Threshold just above position i: pairs < i rejected, >= i accepted.
    rejected_same = np.concatenate([[0], np.cumsum(sorted_same)])
    accepted_diff = (~sorted_same).sum() - np.concatenate([[0], np.cumsum(~sorted_same)])
    errors = rejected_same + accepted_diff
    best = int(np.argmin(errors))
    if best == 0:
        return float(sorted_scores[0]) - 1e-6
    if best == len(sorted_scores):
        return float(sorted_scores[-1]) + 1e-6
    return float((sorted_scores[best - 1] + sorted_scores[best]) / 2)


def kfold_accuracy(scores: FloatArray, same: NDArray[np.bool_], folds: Sequence[int]) -> tuple[float, float]:
    """Mean and std of accuracy over folds, each fold's threshold chosen on the other folds."""
    folds_array = np.asarray(folds)
    accuracies = []
    for fold in np.unique(folds_array):
        test = folds_array == fold
        threshold = best_accuracy_threshold(np.asarray(scores)[~test], np.asarray(same)[~test])
        predicted = np.asarray(scores)[test] >= threshold
        accuracies.append(float(np.mean(predicted == np.asarray(same)[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def all_pairs_scores(
    embeddings: NDArray[np.float32],
    identities: Sequence[str],
    usable: NDArray[np.bool_] | None = None,
    unusable_score: float = -1.0,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Genuine and impostor cosine scores over every unordered pair of distinct images. Pairs
    with an image marked not `usable` get `unusable_score` (a certain non-match)."""
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    gram = embeddings @ embeddings.T
    upper = np.triu_indices(len(labels), k=1)
    scores = gram[upper]
    if usable is not None:
        scores = np.where(usable[upper[0]] & usable[upper[1]], scores, unusable_score)
    same = labels[upper[0]] == labels[upper[1]]
    return scores[same].astype(np.float32), scores[~same].astype(np.float32)


def impostor_tail_from_scores(
    impostor: FloatArray, model_pack: str, source: str, min_count: int = 10
) -> ImpostorTail:
    """Measured (log10 FMR, threshold) points down to where at least `min_count` impostor
    pairs remain above the threshold (below that a quantile is noise)."""
    points = []
    for exponent in np.arange(-1.0, -12.01, -0.5):
        fmr = float(10.0**exponent)
        if fmr * len(impostor) < min_count:
            break
        points.append((float(exponent), round(threshold_at_far(impostor, fmr), 5)))
    if len(points) < 2:
        raise ValueError(f"{len(impostor)} impostor pairs are too few to measure a tail")
    return ImpostorTail(model_pack, source, len(impostor), tuple(points))


@dataclass(frozen=True)
class DedupSimulation:
    duplicates: int
    duplicates_flagged: int
    new_people: int
    new_people_flagged: int

    @property
    def recall(self) -> float:
        return self.duplicates_flagged / self.duplicates if self.duplicates else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.new_people_flagged / self.new_people if self.new_people else float("nan")


def simulate_dedup(
    embeddings: NDArray[np.float32],
    identities: Sequence[str],
    threshold_for_gallery: object,
) -> DedupSimulation:
    """Import photos in order into an empty registry. A photo of someone already enrolled is a
    duplicate: found when a photo of the same person scores at or above the review threshold
    for the gallery size at that moment. A photo of a new person is a false alarm when anyone
    scores at or above it. `threshold_for_gallery(n)` gives the review threshold for n faces."""
    assert callable(threshold_for_gallery)
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    duplicates = flagged_duplicates = new = flagged_new = 0
    chunk = 1024
    for start in range(0, len(labels), chunk):
        stop = min(len(labels), start + chunk)
        scores = embeddings[start:stop] @ embeddings[:stop].T
        for row in range(stop - start):
            index = start + row
            if index == 0:
                new += 1
                continue
            previous = scores[row, :index]
            threshold = float(threshold_for_gallery(index))
            same = labels[:index] == labels[index]
            if same.any():
                duplicates += 1
                flagged_duplicates += int(previous[same].max() >= threshold)
            else:
                new += 1
                flagged_new += int(previous.max() >= threshold)
    return DedupSimulation(duplicates, flagged_duplicates, new, flagged_new)
