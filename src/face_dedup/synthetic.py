"""Synthetic registries of face templates whose statistics are taken from real templates.

Why: the cloud index's recall must be measured at 1M and 15M faces, and no labelled set of
real faces is that large. A two-covariance model (the one under PLDA) is fitted to real
templates of one model pack:

    identity centre  c = mu + B z_b         (between-person covariance  B B^T)
    one photo        x = normalise(c + W z_w)   (within-person covariance  W W^T)

with z_b, z_w standard normal. `mu`, the within-person covariance (pooled deviations of each
person's photos from that person's mean) and the between-person covariance (total covariance
less within) come from the real templates, so the synthetic faces crowd the same directions
the real ones do (anisotropic, not random unit vectors, which would make any index look
good). `fit_report` compares the genuine and impostor score distributions of a synthetic set
shaped like the real one with the real ones; bench/index_recall.py prints it and
BENCHMARKS.md shows it. Pure numpy: no model, no photo, nothing personal is kept (a mean and
two covariance factors of 128 numbers a side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]


def _factor(covariance: NDArray[np.float64]) -> NDArray[np.float64]:
    """A square-root factor F (F F^T = covariance) of the covariance's positive part."""
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))  # type: ignore[no-any-return]


def _normalise(rows: NDArray[np.floating[Any]]) -> Matrix:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class FaceStatistics:
    mean: NDArray[np.float64]
    between: NDArray[np.float64]  # factor of the between-person covariance
    within: NDArray[np.float64]  # factor of the within-person covariance
    fitted_people: int
    fitted_photos: int
    within_scale: float = 1.0  # tuned: see `tuned`
    spread: float = 0.0  # log-normal sigma of each photo's noise scale

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, templates: NDArray[np.floating[Any]], identities: Sequence[str]) -> FaceStatistics:
        x = np.asarray(templates, dtype=np.float64)
        labels = np.unique(np.asarray(identities), return_inverse=True)[1]
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} templates but {len(labels)} identities")
        counts = np.bincount(labels)
        if int((counts >= 2).sum()) < 10:
            raise ValueError("fitting needs at least 10 people with two or more photos")
        means = np.zeros((len(counts), x.shape[1]))
        np.add.at(means, labels, x)
        means /= counts[:, None]
        deviations = (x - means[labels])[counts[labels] >= 2]
        degrees = int((counts[counts >= 2] - 1).sum())  # each person's mean uses one up
        within = deviations.T @ deviations / degrees
        mu = x.mean(axis=0)
        total = np.cov(x - mu, rowvar=False)
        return cls(mu, _factor(total - within), _factor(within), len(counts), len(x))

    def centres(self, rng: np.random.Generator, n: int) -> NDArray[np.float32]:
        """`n` new people (identity centres, not unit length)."""
        z = rng.standard_normal((n, self.dim), dtype=np.float32)
        return (self.mean + z @ self.between.T.astype(np.float32)).astype(np.float32)

    def photos(self, rng: np.random.Generator, centres: NDArray[np.float32]) -> Matrix:
        """One new photo's template per centre (unit length), drawn in chunks to bound memory.
        Each photo's within-person noise is scaled by a log-normal factor (`spread`): real
        photos are not equally good (blur, pose, age gaps), which gives real genuine scores
        their long lower tail; one Gaussian for every photo would make them far too tight."""
        out = np.empty(centres.shape, dtype=np.float32)
        within = (self.within.T * self.within_scale).astype(np.float32)
        for start in range(0, len(centres), 100_000):
            chunk = centres[start : start + 100_000]
            noise = rng.standard_normal(chunk.shape, dtype=np.float32) @ within
            scale = np.exp(self.spread * rng.standard_normal((len(chunk), 1)) - self.spread**2 / 2)
            out[start : start + len(chunk)] = _normalise(chunk + noise * scale.astype(np.float32))
        return out

    def tuned(self, genuine: NDArray[np.floating[Any]], photos_per_person: Sequence[int]) -> FaceStatistics:
        """Fit `within_scale` and `spread` so that the genuine scores of a synthetic set shaped
        like the real one match the real genuine mean and spread (a grid and a bisection on a
        fixed seed: deterministic)."""
        target_mean, target_std = float(np.mean(genuine)), float(np.std(genuine))
        best: tuple[float, FaceStatistics] | None = None
        for spread in np.arange(0.0, 1.21, 0.1):
            low, high = 0.3, 3.0
            candidate = self
            for _ in range(14):  # genuine mean falls as the within-person noise grows
                middle = (low + high) / 2
                candidate = replace(self, within_scale=middle, spread=float(spread))
                mean, std = _genuine_moments(candidate, photos_per_person)
                low, high = (middle, high) if mean > target_mean else (low, middle)
            error = abs(std - target_std)
            if best is None or error < best[0]:
                best = (error, candidate)
        assert best is not None
        return best[1]

    def like(
        self, rng: np.random.Generator, photos_per_person: Sequence[int]
    ) -> tuple[Matrix, NDArray[np.int64]]:
        """A synthetic set with the given number of photos per person (templates, person index)."""
        counts = np.asarray(photos_per_person, dtype=np.int64)
        people = np.repeat(np.arange(len(counts)), counts)
        return self.photos(rng, self.centres(rng, len(counts))[people]), people


def _genuine_moments(stats: FaceStatistics, photos_per_person: Sequence[int]) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    templates, people = stats.like(rng, photos_per_person)
    scores = genuine_scores(templates, people)
    return float(np.mean(scores)), float(np.std(scores))


def genuine_scores(templates: Matrix, people: NDArray[np.int64]) -> NDArray[np.float32]:
    """Cosine of every pair of photos of the same person (people given as indices)."""
    order = np.argsort(people, kind="stable")
    sorted_people = people[order]
    starts = np.flatnonzero(np.r_[True, sorted_people[1:] != sorted_people[:-1]])
    ends = np.r_[starts[1:], len(order)]
    out = []
    for start, end in zip(starts, ends, strict=True):
        if end - start >= 2:
            block = templates[order[start:end]]
            gram = block @ block.T
            out.append(gram[np.triu_indices(end - start, k=1)])
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def score_summary(
    genuine: NDArray[np.floating[Any]], impostor: NDArray[np.floating[Any]]
) -> dict[str, float]:
    """What the fit is judged on: both distributions' centre and spread, the impostor tail
    (thresholds at FMR 1e-3 / 1e-4 / 1e-5, which set the review threshold) and the share of
    genuine pairs above them (what de-duplication finds)."""
    from face_dedup.calibration import threshold_at_far

    out = {
        "genuine_mean": float(np.mean(genuine)),
        "genuine_std": float(np.std(genuine)),
        "genuine_p05": float(np.quantile(genuine, 0.05)),
        "impostor_mean": float(np.mean(impostor)),
        "impostor_std": float(np.std(impostor)),
    }
    for exponent in (3, 4, 5):
        fmr = 10.0**-exponent
        if fmr * len(impostor) < 10:
            continue
        threshold = threshold_at_far(impostor, fmr)
        out[f"threshold_fmr_1e-{exponent}"] = threshold
        out[f"tar_fmr_1e-{exponent}"] = float(np.mean(genuine >= threshold))
    return out
