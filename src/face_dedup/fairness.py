"""Error rates per group, with confidence intervals from resampling people.

Pure statistics: scores, labels and counts in, numbers out. A group is whatever a registry's
labels file says (sex as presented, age band, enrollment site, camera); nothing here infers a
group from a face.

What is measured at each threshold, following NIST FRVT's demographic reports:
- false-match rate (FMR) for pairs of different people, both in group a (within), or one in a
  and one in b (across);
- false-non-match rate (FNMR) for pairs of photos of one person, both photos in the group.
  Only photos that yielded a template count here; photos that did not are failures to enroll;
- failure-to-enroll (FTE): share of photos rejected, per group and per reason.

Why people, not photos, are resampled: photos of one person are not independent (one person's
many photos, or one lookalike pair, can carry a whole group's error count). The bootstrap draws
people with replacement within each group (stratified, so every group keeps its size) and
recomputes every rate from the drawn people's photos; the percentile interval is reported.
When a group shows no error at all the percentile interval is [0, 0], which claims too much:
its upper end is then the "rule of three" bound 3/n, with n the independent units (people for
FNMR and FTE, pairs of people for FMR).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DEFAULT_RESAMPLES = 1000
MAX_RESAMPLES = 100_000  # the weights are resamples x people floats: bounded memory
CONFIDENCE = 0.95
MIN_PEOPLE_FOR_VERDICT = 20  # people (cases, for officers' outcomes) per group for a verdict
_CHUNK = 1024  # rows of the score matrix computed at once (bounded memory)


@dataclass(frozen=True)
class Estimate:
    """A rate with its interval. `value` is None when there is nothing to measure."""

    value: float | None
    low: float | None
    high: float | None
    errors: float
    trials: float
    units: int  # independent units behind it (people, or pairs of people)

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "errors": round(self.errors, 6),
            "trials": round(self.trials, 6),
            "units": self.units,
        }


@dataclass(frozen=True)
class Ratio:
    """Worst group over best group, with the interval of the ratio and of the difference (same
    resamples). `differs` is True when the difference's interval excludes zero and both groups
    have at least MIN_PEOPLE_FOR_VERDICT people (see `compare`)."""

    metric: str
    worst: str
    best: str
    ratio: float | None  # None when the best group shows no error at all
    ratio_low: float | None
    ratio_high: float | None  # None with a ratio_low: unbounded (the best group's errors may be 0)
    difference: float
    difference_low: float
    difference_high: float
    differs: bool
    too_few: bool = False  # a group below MIN_PEOPLE_FOR_VERDICT: no verdict either way

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "worst": self.worst,
            "best": self.best,
            "ratio": self.ratio,
            "ratio_ci": [self.ratio_low, self.ratio_high],
            "difference": self.difference,
            "difference_ci": [self.difference_low, self.difference_high],
            "differs": self.differs,
            "too_few_to_tell": self.too_few,
        }


class Resampler:
    """Bootstrap weights over people, stratified by group.

    `person_group[p]` is the stratum of person p (a person whose photos carry several groups is
    drawn in the stratum of their first photo). Row 0 of `weights` is the observed data (every
    person once); rows 1.. are resamples.
    """

    def __init__(self, person_group: Sequence[int] | IntArray, resamples: int, seed: int) -> None:
        if not 10 <= resamples <= MAX_RESAMPLES:
            raise ValueError(f"--resamples must be between 10 and {MAX_RESAMPLES:,}")
        strata = np.asarray(person_group, dtype=np.int64)
        rng = np.random.default_rng(seed)
        weights = np.zeros((resamples + 1, len(strata)), dtype=np.float64)
        weights[0] = 1.0
        for stratum in np.unique(strata):
            members = np.flatnonzero(strata == stratum)
            draws = rng.integers(0, len(members), size=(resamples, len(members)))
            for row in range(resamples):
                weights[row + 1, members] += np.bincount(draws[row], minlength=len(members))
        self.weights = weights

    @property
    def resamples(self) -> int:
        return int(self.weights.shape[0] - 1)


def _interval(values: FloatArray, confidence: float) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def _estimate(
    numerator: FloatArray, denominator: FloatArray, units: int, confidence: float
) -> tuple[Estimate, FloatArray]:
    """From per-resample sums (row 0 observed): the estimate and the per-resample rates."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)
    if denominator[0] <= 0:
        return Estimate(None, None, None, 0.0, 0.0, units), rates
    low, high = _interval(rates[1:], confidence)
    if numerator[0] == 0 and units > 0:
        low, high = 0.0, min(1.0, -math.log(1 - confidence) / units)  # rule of three at 95%
    value = float(rates[0])
    return Estimate(value, low, high, float(numerator[0]), float(denominator[0]), units), rates


_UNBOUNDED = 1e300  # stands for an infinite ratio inside the percentile computation


def _ratio_interval(
    worst: FloatArray, best: FloatArray, confidence: float
) -> tuple[float | None, float | None]:
    """Percentile interval of worst/best over the resamples. A resample where the best group
    shows no error has an infinite ratio (or an undefined one, when neither does): dropping it
    would cut off exactly the largest ratios and pull the upper end down, so it counts as
    infinite for the upper end (None: unbounded) and, when undefined, as 0 for the lower end."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = worst / best
    known = ~np.isnan(worst) & ~np.isnan(best)  # a resample without any trial says nothing
    ratios = ratios[known]
    if ratios.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    undefined = np.isnan(ratios)
    high_values = np.where(undefined | np.isinf(ratios), _UNBOUNDED, ratios)
    low_values = np.where(undefined, 0.0, np.where(np.isinf(ratios), _UNBOUNDED, ratios))
    low = float(np.percentile(low_values, tail))
    high = float(np.percentile(high_values, 100 - tail))
    return (None if low >= _UNBOUNDED / 2 else low), (None if high >= _UNBOUNDED / 2 else high)


def compare(
    metric: str,
    rates: Mapping[str, FloatArray],
    estimates: Mapping[str, Estimate],
    confidence: float,
    people: Mapping[str, int] | None = None,
) -> Ratio | None:
    """Worst and best group by the observed rate; ratio and difference on the same resamples.
    `people`: independent units per group (default: each estimate's units). Below
    MIN_PEOPLE_FOR_VERDICT in either group there is no verdict: resampling a handful of people
    gives intervals far too narrow (with no real difference, groups of 2-10 people were
    "differing" in half the runs or more), so `differs` stays False and `too_few` says why."""
    measured = {g: e.value for g, e in estimates.items() if e.value is not None}
    if len(measured) < 2:
        return None
    worst = max(measured, key=lambda g: (measured[g], g))
    best = min(measured, key=lambda g: (measured[g], g))
    if worst == best:
        worst, best = sorted(measured)[:2]
    difference = rates[worst] - rates[best]
    diff_low, diff_high = _interval(difference[1:], confidence)
    ratio: float | None = None
    ratio_low = ratio_high = None
    if measured[best] > 0:
        ratio = measured[worst] / measured[best]
        ratio_low, ratio_high = _ratio_interval(rates[worst][1:], rates[best][1:], confidence)
    lo = diff_low if diff_low is not None else 0.0
    hi = diff_high if diff_high is not None else 0.0
    sizes = people if people is not None else {g: e.units for g, e in estimates.items()}
    too_few = min(sizes.get(worst, 0), sizes.get(best, 0)) < MIN_PEOPLE_FOR_VERDICT
    return Ratio(
        metric,
        worst,
        best,
        ratio,
        ratio_low,
        ratio_high,
        float(difference[0]),
        lo,
        hi,
        differs=not too_few and (lo > 0 or hi < 0),
        too_few=too_few,
    )


# ---------------------------------------------------------------------------------------------
# Labelled photos


@dataclass(frozen=True)
class Labelled:
    """Photos with their person and group, as integer codes.

    `person[i]`, `group[i]`: codes of photo i; `usable[i]`: it yielded a template (row i of the
    embeddings); `reason[i]`: why not, when not usable.
    """

    person: IntArray
    group: IntArray
    usable: NDArray[np.bool_]
    reason: tuple[str | None, ...]
    group_names: tuple[str, ...]
    person_names: tuple[str, ...]

    @classmethod
    def from_labels(
        cls, persons: Sequence[str], groups: Sequence[str], reasons: Sequence[str | None]
    ) -> Labelled:
        if not len(persons) == len(groups) == len(reasons):
            raise ValueError("persons, groups and reasons must have one entry per photo")
        person_names, person = np.unique(np.asarray(persons, dtype=str), return_inverse=True)
        group_names, group = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        return cls(
            person.astype(np.int64),
            group.astype(np.int64),
            np.array([r is None for r in reasons], dtype=bool),
            tuple(reasons),
            tuple(str(g) for g in group_names),
            tuple(str(p) for p in person_names),
        )

    @property
    def people(self) -> int:
        return len(self.person_names)

    def person_strata(self) -> IntArray:
        """Each person's group: that of their first photo."""
        strata = np.full(self.people, -1, dtype=np.int64)
        for index in range(len(self.person) - 1, -1, -1):
            strata[self.person[index]] = self.group[index]
        return strata

    def people_per_group(self) -> dict[str, int]:
        return {
            name: len(np.unique(self.person[self.group == code]))
            for code, name in enumerate(self.group_names)
        }


def _weighted(weights: FloatArray, person: IntArray, values: FloatArray) -> FloatArray:
    """Per resample: sum over items of weight(person of item) x value(item)."""
    per_person = np.bincount(person, weights=values, minlength=weights.shape[1])
    return weights @ per_person


def failure_to_enroll(data: Labelled, resampler: Resampler, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Share of photos rejected, per group, overall and per reason."""
    weights = resampler.weights
    result: dict[str, Any] = {}
    rates: dict[str, FloatArray] = {}
    estimates: dict[str, Estimate] = {}
    reasons = sorted({r for r in data.reason if r is not None})
    for code, name in enumerate(data.group_names):
        in_group = (data.group == code).astype(np.float64)
        failed = in_group * (~data.usable)
        people = len(np.unique(data.person[data.group == code]))
        estimate, rate = _estimate(
            _weighted(weights, data.person, failed),
            _weighted(weights, data.person, in_group),
            people,
            confidence,
        )
        by_reason = {}
        for reason in reasons:
            hit = in_group * np.array([r == reason for r in data.reason], dtype=np.float64)
            by_reason[reason] = _estimate(
                _weighted(weights, data.person, hit),
                _weighted(weights, data.person, in_group),
                people,
                confidence,
            )[0].as_dict()
        estimates[name], rates[name] = estimate, rate
        result[name] = estimate.as_dict() | {"by_reason": by_reason}
    ratio = compare("fte", rates, estimates, confidence)
    return {"groups": result, "worst_vs_best": ratio.as_dict() if ratio else None}


@dataclass(frozen=True)
class PairCounts:
    """What the pair statistics need, computed once from the embeddings.

    Genuine: per usable photo pair of one person in one group, its score (kept per pair: there
    are few). Impostor: only the pairs scoring at or above the lowest threshold asked for (few
    at operating thresholds), plus exact pair totals from photo counts."""

    genuine_person: IntArray
    genuine_group: IntArray
    genuine_score: FloatArray
    impostor_a: IntArray  # photo index of the first photo of a pair above the lowest threshold
    impostor_b: IntArray
    impostor_score: FloatArray
    per_person_group: FloatArray  # usable photos of person p in group g (people x groups)


def pair_counts(embeddings: NDArray[np.float32], data: Labelled, min_threshold: float) -> PairCounts:
    """`embeddings[i]` is photo i's template (any values for photos not usable)."""
    usable = np.flatnonzero(data.usable)
    vectors = np.asarray(embeddings, dtype=np.float32)[usable]
    person, group = data.person[usable], data.group[usable]
    gen_p: list[int] = []
    gen_g: list[int] = []
    gen_s: list[float] = []
    imp_a: list[IntArray] = []
    imp_b: list[IntArray] = []
    imp_s: list[FloatArray] = []
    for start in range(0, len(usable), _CHUNK):
        stop = min(len(usable), start + _CHUNK)
        scores = vectors[start:stop] @ vectors.T
        rows, cols = np.nonzero(scores >= min_threshold)
        keep = cols > rows + start
        rows, cols = rows[keep], cols[keep]
        different = person[rows + start] != person[cols]
        imp_a.append(usable[rows[different] + start])
        imp_b.append(usable[cols[different]])
        imp_s.append(scores[rows[different], cols[different]].astype(np.float64))
    for p in np.unique(person):
        members = np.flatnonzero(person == p)
        if len(members) < 2:
            continue
        block = vectors[members] @ vectors[members].T
        x, y = np.triu_indices(len(members), k=1)
        one_group = group[members[x]] == group[members[y]]  # pairs across groups are neither's
        gen_p.extend([int(p)] * int(one_group.sum()))
        gen_g.extend(group[members[x[one_group]]].tolist())
        gen_s.extend(block[x[one_group], y[one_group]].tolist())
    table = np.zeros((data.people, len(data.group_names)), dtype=np.float64)
    np.add.at(table, (person, group), 1.0)
    return PairCounts(
        np.asarray(gen_p, dtype=np.int64),
        np.asarray(gen_g, dtype=np.int64),
        np.asarray(gen_s, dtype=np.float64),
        np.concatenate(imp_a) if imp_a else np.zeros(0, np.int64),
        np.concatenate(imp_b) if imp_b else np.zeros(0, np.int64),
        np.concatenate(imp_s) if imp_s else np.zeros(0, np.float64),
        table,
    )


def _pair_weights(weights: FloatArray, pa: IntArray, pb: IntArray, block: int = 64) -> FloatArray:
    """Per resample: sum over the pairs of weight(person a) x weight(person b). Repeated person
    pairs are counted once with their multiplicity, and resamples go in blocks (bounded memory
    with many pairs above a low threshold)."""
    if len(pa) == 0:
        return np.zeros(weights.shape[0])
    pairs, multiplicity = np.unique(np.stack([pa, pb]), axis=1, return_counts=True)
    result = np.empty(weights.shape[0])
    for start in range(0, weights.shape[0], block):
        rows = weights[start : start + block]
        result[start : start + block] = (rows[:, pairs[0]] * rows[:, pairs[1]]) @ multiplicity
    return result


def _group_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    return [(a, b) for a in range(len(names)) for b in range(a, len(names))]


PAIR_SEPARATOR = "|"  # no group name may contain it (group_report.clean_groups)


def pair_label(names: Sequence[str], a: int, b: int) -> str:
    return names[a] if a == b else f"{names[a]}{PAIR_SEPARATOR}{names[b]}"


def rates_at_threshold(
    counts: PairCounts, data: Labelled, resampler: Resampler, threshold: float, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """FMR within and across groups and FNMR per group at one threshold (score >= threshold is
    a match), each with its interval, and the worst/best comparisons."""
    weights = resampler.weights
    names = data.group_names
    table = counts.per_person_group
    people = table.shape[0]

    # FNMR: genuine pairs below the threshold, per group.
    fnmr: dict[str, Any] = {}
    fnmr_rates: dict[str, FloatArray] = {}
    fnmr_estimates: dict[str, Estimate] = {}
    for code, name in enumerate(names):
        mine = counts.genuine_group == code
        who = counts.genuine_person[mine]
        missed = (counts.genuine_score[mine] < threshold).astype(np.float64)
        numerator = weights @ np.bincount(who, weights=missed, minlength=people)
        denominator = weights @ np.bincount(who, weights=np.ones(len(who)), minlength=people)
        estimate, rate = _estimate(numerator, denominator, len(np.unique(who)), confidence)
        fnmr[name], fnmr_rates[name], fnmr_estimates[name] = estimate.as_dict(), rate, estimate

    # FMR: impostor pairs at or above the threshold, per pair of groups.
    above = counts.impostor_score >= threshold
    pa, pb = data.person[counts.impostor_a[above]], data.person[counts.impostor_b[above]]
    ga, gb = data.group[counts.impostor_a[above]], data.group[counts.impostor_b[above]]
    lo_g, hi_g = np.minimum(ga, gb), np.maximum(ga, gb)
    totals = weights @ table  # resamples x groups: weighted usable photos
    squared = weights**2
    fmr: dict[str, Any] = {}
    within_rates: dict[str, FloatArray] = {}
    within_estimates: dict[str, Estimate] = {}
    group_people = (table > 0).sum(axis=0)
    for a, b in _group_pairs(names):
        mask = (lo_g == a) & (hi_g == b)
        numerator = _pair_weights(weights, pa[mask], pb[mask])
        # pairs of photos of different people: all pairs, less those of one person with itself
        same_person = squared @ (table[:, a] * table[:, b])
        if a == b:
            denominator = (totals[:, a] ** 2 - same_person) / 2
            units = int(group_people[a] * (group_people[a] - 1) // 2)
        else:
            denominator = totals[:, a] * totals[:, b] - same_person
            units = int(group_people[a] * group_people[b])
        estimate, rate = _estimate(numerator, denominator, units, confidence)
        fmr[pair_label(names, a, b)] = estimate.as_dict() | {"kind": "within" if a == b else "across"}
        if a == b:
            within_rates[names[a]], within_estimates[names[a]] = rate, estimate
    comparisons = [
        compare("fnmr", fnmr_rates, fnmr_estimates, confidence),
        compare(
            "fmr_within",
            within_rates,
            within_estimates,
            confidence,
            people={names[g]: int(group_people[g]) for g in range(len(names))},
        ),
    ]
    return {
        "threshold": threshold,
        "fnmr": fnmr,
        "fmr": fmr,
        "worst_vs_best": [c.as_dict() for c in comparisons if c is not None],
    }


# ---------------------------------------------------------------------------------------------
# De-duplication: photos imported in order into an empty registry


@dataclass(frozen=True)
class DedupItems:
    """Per photo (usable ones, in import order): was its person already enrolled, and did the
    search raise it (a candidate at or above the review threshold in force at that moment)."""

    index: IntArray  # photo index in the labelled data
    duplicate: NDArray[np.bool_]
    found: NDArray[np.bool_]  # duplicate: a photo of the same person scored at or above
    alarm: NDArray[np.bool_]  # new person: anyone scored at or above


def simulate_dedup_items(
    embeddings: NDArray[np.float32], data: Labelled, review_for_gallery: Callable[[int], float]
) -> DedupItems:
    usable = np.flatnonzero(data.usable)
    vectors = np.asarray(embeddings, dtype=np.float32)[usable]
    person = data.person[usable]
    duplicate = np.zeros(len(usable), dtype=bool)
    found = np.zeros(len(usable), dtype=bool)
    alarm = np.zeros(len(usable), dtype=bool)
    for start in range(0, len(usable), _CHUNK):
        stop = min(len(usable), start + _CHUNK)
        scores = vectors[start:stop] @ vectors[:stop].T
        for row in range(stop - start):
            index = start + row
            if index == 0:
                continue
            previous = scores[row, :index]
            threshold = review_for_gallery(index)
            same = person[:index] == person[index]
            if same.any():
                duplicate[index] = True
                found[index] = bool(previous[same].max() >= threshold)
            else:
                alarm[index] = bool(previous.max() >= threshold)
    return DedupItems(usable, duplicate, found, alarm)


def dedup_by_group(
    items: DedupItems, data: Labelled, resampler: Resampler, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Duplicate recall and false-alarm rate per group of the arriving photo."""
    weights = resampler.weights
    person = data.person[items.index]
    group = data.group[items.index]
    result: dict[str, Any] = {}
    recall_rates: dict[str, FloatArray] = {}
    recall_estimates: dict[str, Estimate] = {}
    alarm_rates: dict[str, FloatArray] = {}
    alarm_estimates: dict[str, Estimate] = {}
    for code, name in enumerate(data.group_names):
        mine = group == code
        dup = (mine & items.duplicate).astype(np.float64)
        new = (mine & ~items.duplicate).astype(np.float64)
        found = (mine & items.found).astype(np.float64)
        missed = dup - found
        alarm = (mine & items.alarm).astype(np.float64)
        dup_people = len(np.unique(person[dup > 0]))
        new_people = len(np.unique(person[new > 0]))
        miss, miss_rate = _estimate(
            _weighted(weights, person, missed), _weighted(weights, person, dup), dup_people, confidence
        )
        alarms, alarm_rate = _estimate(
            _weighted(weights, person, alarm), _weighted(weights, person, new), new_people, confidence
        )
        recall = Estimate(
            None if miss.value is None else 1 - miss.value,
            None if miss.high is None else 1 - miss.high,
            None if miss.low is None else 1 - miss.low,
            miss.trials - miss.errors,
            miss.trials,
            miss.units,
        )
        result[name] = {"duplicate_recall": recall.as_dict(), "false_alarm_rate": alarms.as_dict()}
        recall_rates[name], recall_estimates[name] = miss_rate, miss
        alarm_rates[name], alarm_estimates[name] = alarm_rate, alarms
    comparisons = [
        compare("duplicates_missed", recall_rates, recall_estimates, confidence),
        compare("false_alarms", alarm_rates, alarm_estimates, confidence),
    ]
    return {"groups": result, "worst_vs_best": [c.as_dict() for c in comparisons if c is not None]}


# ---------------------------------------------------------------------------------------------
# Officers' outcomes


def case_outcomes_by_group(
    groups: Sequence[str],
    decisions: Sequence[str | None],
    overturned: Sequence[bool],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Per group of the case's applicant: share of decided cases decided each way, and the share
    of "same person" decisions a supervisor overturned. The unit resampled is the case."""
    if not len(groups) == len(decisions) == len(overturned):
        raise ValueError("groups, decisions and overturned must have one entry per case")
    names, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    resampler = Resampler(codes, resamples, seed)
    case = np.arange(len(groups), dtype=np.int64)
    weights = resampler.weights
    kinds = sorted({d for d in decisions if d is not None})
    result: dict[str, Any] = {}
    per_kind: dict[str, tuple[dict[str, FloatArray], dict[str, Estimate]]] = {k: ({}, {}) for k in kinds}
    for code, name in enumerate(names):
        mine = codes == code
        decided = (mine & np.array([d is not None for d in decisions])).astype(np.float64)
        entry: dict[str, Any] = {"cases": int(mine.sum()), "decided": int(decided.sum())}
        for kind in kinds:
            hit = (mine & np.array([d == kind for d in decisions])).astype(np.float64)
            estimate, rate = _estimate(
                _weighted(weights, case, hit),
                _weighted(weights, case, decided),
                int(decided.sum()),
                confidence,
            )
            entry[kind] = estimate.as_dict()
            per_kind[kind][0][str(name)], per_kind[kind][1][str(name)] = rate, estimate
        same = (mine & np.array([d == "same_person" for d in decisions])).astype(np.float64)
        flipped = same * np.asarray(overturned, dtype=np.float64)
        entry["overturned"] = _estimate(
            _weighted(weights, case, flipped), _weighted(weights, case, same), int(same.sum()), confidence
        )[0].as_dict()
        result[str(name)] = entry
    comparisons = [
        compare(kind, rates, estimates, confidence) for kind, (rates, estimates) in per_kind.items()
    ]
    return {"groups": result, "worst_vs_best": [c.as_dict() for c in comparisons if c is not None]}
