"""Drift in operation: aggregates of what the service decides, and a test for shifts.

Recorded per tenant, channel and day, as counts only (no template, no photo, no id, no name):
- `outcome`: enrolled / review / duplicate / verified / rejected (the case rate follows);
- `reason`: the rejection reason of each rejected input;
- `best_score`: the best candidate's score, in bins of 0.02, or `none` when no candidate
  reached the review threshold (the service searches only above it);
- `quality.<measure>`: the quality measures of every analysed photo (brightness, sharpness,
  eye distance in pixels, detector score, pose), in fixed bins.

`compare` tests a recent window against a baseline, measure by measure:
- binned numeric measures: the two-sample Kolmogorov-Smirnov statistic D on the binned
  distributions, with its asymptotic p-value (binning only makes the test conservative);
- categories (outcome, reason): Pearson's chi-square test of homogeneity, categories with an
  expected count below 5 pooled.
A shift is flagged when p < alpha / (number of measures tested) (Bonferroni; alpha 0.01 by
default) and the effect is large enough to matter (D >= 0.1; total variation >= 0.05: with
thousands of inputs a day, a negligible change is "significant"). A measure with fewer than
`min_count` (100) observations in either window is reported as too few to test, not passed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from face_dedup.domain import ImportItem, Outcome

# Bin edges per quality measure (lower edges; values below the first go in the first bin).
QUALITY_BINS: dict[str, tuple[float, ...]] = {
    "brightness": tuple(float(x) for x in range(0, 256, 8)),
    "sharpness": tuple(round(2 ** (k / 2), 3) for k in range(0, 31)),  # log scale, 1 .. 32768
    "inter_eye_px": tuple(round(2 ** (k / 4), 3) for k in range(8, 49)),  # 4 .. 4096 px
    "detector_score": tuple(round(0.5 + 0.02 * k, 2) for k in range(26)),
    "yaw_ratio": tuple(round(-1.0 + 0.1 * k, 1) for k in range(21)),
    "pitch_offset": tuple(round(-0.5 + 0.05 * k, 2) for k in range(21)),
}
SCORE_BINS = tuple(round(0.02 * k, 2) for k in range(50))
NO_CANDIDATE = "none"
CATEGORICAL = ("outcome", "reason")

ALPHA = 0.01
MIN_COUNT = 100
MIN_KS = 0.1
MIN_TV = 0.05


def _bin(value: float, edges: tuple[float, ...]) -> str:
    chosen = edges[0]
    for edge in edges:
        if value >= edge:
            chosen = edge
        else:
            break
    return f"{chosen:g}"


def channel_of(actor: str) -> str:
    """The channel an input came by, from who submitted it: `upload:selfie` -> `selfie`,
    `cli:alice` -> `cli` (never the person's name)."""
    kind, _, rest = actor.partition(":")
    if kind == "upload" and rest:
        return rest[:32]
    return kind[:32] or "unknown"


def observations(item: ImportItem) -> list[tuple[str, str]]:
    """(metric, bin) pairs one decided input adds to its day's counts."""
    found: list[tuple[str, str]] = [("outcome", item.outcome.value)]
    if item.outcome is Outcome.REJECTED:
        found.append(("reason", item.reason or "UNKNOWN"))
    else:
        best = max((c.score for c in item.candidates), default=None)
        found.append(("best_score", NO_CANDIDATE if best is None else _bin(best, SCORE_BINS)))
    for name, edges in QUALITY_BINS.items():
        value = item.measures.get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            found.append((f"quality.{name}", _bin(float(value), edges)))
    return found


@dataclass(frozen=True)
class DayKey:
    tenant: str
    channel: str
    day: str  # YYYY-MM-DD, UTC


class DriftStore(ABC):
    """Where the daily counts live (a port: SQLite on one machine)."""

    @abstractmethod
    def add(self, key: DayKey, counts: Mapping[tuple[str, str], int]) -> None: ...

    @abstractmethod
    def counts(
        self, *, tenant: str, first_day: str, last_day: str, channel: str | None = None
    ) -> dict[tuple[str, str], int]:
        """Summed over the days from first_day to last_day inclusive (and channels, unless one)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class DriftRecorder:
    """Turns each decided input into counts. Never raises into the caller: losing one day's
    tally must not lose an enrollment (a failure is logged, without the input)."""

    def __init__(self, store: DriftStore) -> None:
        self.store = store

    def observe(self, item: ImportItem, actor: str) -> None:
        counts: dict[tuple[str, str], int] = {}
        for pair in observations(item):
            counts[pair] = counts.get(pair, 0) + 1
        day = (item.created_at or "")[:10] or "unknown"
        self.store.add(DayKey(item.tenant, channel_of(actor), day), counts)


# ---------------------------------------------------------------------------------------------
# The test


def kolmogorov_sf(statistic: float) -> float:
    """P(K > x) for the Kolmogorov distribution (asymptotic two-sample KS p-value)."""
    if statistic <= 0:
        return 1.0
    if statistic < 0.2:
        return 1.0  # the series converges slowly here and the sum is 1 to double precision
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * statistic * statistic)
        total += term
        if abs(term) < 1e-12:
            break
    return min(1.0, max(0.0, total))


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution with integer degrees of freedom
    (closed forms: a finite Poisson sum for even dof, erfc plus a finite series for odd)."""
    if dof < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if x <= 0:
        return 1.0
    half = x / 2
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= half / k
            total += term
        return min(1.0, math.exp(-half) * total)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) * math.exp(-half) * 2 / math.sqrt(math.pi)
    for k in range(1, (dof + 1) // 2):
        total += term
        term *= half / (k + 0.5)
    return min(1.0, total)


@dataclass(frozen=True)
class Finding:
    metric: str
    test: str  # "ks" | "chi2" | "too_few"
    baseline_n: int
    recent_n: int
    statistic: float | None
    p_value: float | None
    effect: float | None  # KS D, or total variation distance
    flagged: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "test": self.test,
            "baseline_n": self.baseline_n,
            "recent_n": self.recent_n,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "effect": self.effect,
            "flagged": self.flagged,
            "detail": self.detail,
        }


def _split(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    metrics: dict[str, dict[str, int]] = {}
    for (metric, bin_), n in counts.items():
        if n > 0:
            metrics.setdefault(metric, {})[bin_] = metrics.get(metric, {}).get(bin_, 0) + n
    return metrics


def _order(metric: str, bins: Iterable[str]) -> list[str]:
    """Numeric bins in value order (`none` first: below any threshold)."""

    def key(b: str) -> tuple[int, float]:
        return (0, 0.0) if b == NO_CANDIDATE else (1, float(b))

    return sorted(bins, key=key)


def _ks(base: dict[str, int], recent: dict[str, int], metric: str) -> tuple[float, float, str]:
    bins = _order(metric, set(base) | set(recent))
    n1, n2 = sum(base.values()), sum(recent.values())
    c1 = c2 = 0.0
    statistic, where = 0.0, bins[0]
    for b in bins:
        c1 += base.get(b, 0) / n1
        c2 += recent.get(b, 0) / n2
        if abs(c1 - c2) > statistic:
            statistic, where = abs(c1 - c2), b
    effective = math.sqrt(n1 * n2 / (n1 + n2))
    p = kolmogorov_sf((effective + 0.12 + 0.11 / effective) * statistic)
    mean1 = _mean(base)
    mean2 = _mean(recent)
    detail = f"largest CDF gap at bin {where}"
    if mean1 is not None and mean2 is not None:
        detail += f"; binned mean {mean1:.3g} -> {mean2:.3g}"
    return statistic, p, detail


def _mean(hist: dict[str, int]) -> float | None:
    numeric = {float(b): n for b, n in hist.items() if b != NO_CANDIDATE}
    total = sum(numeric.values())
    return sum(b * n for b, n in numeric.items()) / total if total else None


def _chi2(base: dict[str, int], recent: dict[str, int]) -> tuple[float, float, float, str]:
    n1, n2 = sum(base.values()), sum(recent.values())
    categories = sorted(set(base) | set(recent), key=lambda c: -(base.get(c, 0) + recent.get(c, 0)))
    # pool categories whose expected count is below 5 in either window into one
    kept: list[tuple[str, int, int]] = []
    pooled = [0, 0]
    for c in categories:
        total = base.get(c, 0) + recent.get(c, 0)
        if min(total * n1, total * n2) / (n1 + n2) < 5:
            pooled[0] += base.get(c, 0)
            pooled[1] += recent.get(c, 0)
        else:
            kept.append((c, base.get(c, 0), recent.get(c, 0)))
    if sum(pooled):
        kept.append(("(others)", pooled[0], pooled[1]))
    tv = 0.5 * sum(abs(base.get(c, 0) / n1 - recent.get(c, 0) / n2) for c in categories)
    if len(kept) < 2:
        return 0.0, 1.0, tv, "a single category"
    statistic = 0.0
    for _, a, b in kept:
        total = a + b
        for observed, n in ((a, n1), (b, n2)):
            expected = total * n / (n1 + n2)
            statistic += (observed - expected) ** 2 / expected
    moved = max(kept, key=lambda k: abs(k[1] / n1 - k[2] / n2))
    detail = f"largest change: {moved[0]} {moved[1] / n1:.1%} -> {moved[2] / n2:.1%}"
    return statistic, chi2_sf(statistic, len(kept) - 1), tv, detail


def compare(
    baseline: Mapping[tuple[str, str], int],
    recent: Mapping[tuple[str, str], int],
    *,
    alpha: float = ALPHA,
    min_count: int = MIN_COUNT,
    min_ks: float = MIN_KS,
    min_tv: float = MIN_TV,
) -> dict[str, Any]:
    """Every measure of the recent window against the baseline (see the module's text)."""
    if min_count < 1 or not 0 < alpha < 1:
        raise ValueError("--min-count must be at least 1 and --alpha between 0 and 1")
    base, now = _split(baseline), _split(recent)
    metrics = sorted(set(base) | set(now))
    testable = [
        m
        for m in metrics
        if sum(base.get(m, {}).values()) >= min_count and sum(now.get(m, {}).values()) >= min_count
    ]
    corrected = alpha / max(1, len(testable))
    findings = []
    for metric in metrics:
        b, r = base.get(metric, {}), now.get(metric, {})
        n1, n2 = sum(b.values()), sum(r.values())
        if metric not in testable:
            detail = f"fewer than {min_count} observations in a window"
            findings.append(Finding(metric, "too_few", n1, n2, None, None, None, False, detail))
        elif metric in CATEGORICAL:
            statistic, p, tv, detail = _chi2(b, r)
            flagged = p < corrected and tv >= min_tv
            findings.append(Finding(metric, "chi2", n1, n2, statistic, p, tv, flagged, detail))
        else:
            d, p, detail = _ks(b, r, metric)
            flagged = p < corrected and d >= min_ks
            findings.append(Finding(metric, "ks", n1, n2, d, p, d, flagged, detail))
    return {
        "test": {
            "numeric": "two-sample Kolmogorov-Smirnov on binned distributions (asymptotic p)",
            "categories": "chi-square test of homogeneity (expected < 5 pooled)",
            "alpha": alpha,
            "alpha_per_measure": corrected,
            "correction": f"Bonferroni over {len(testable)} measures tested",
            "min_count": min_count,
            "min_effect": {"ks_d": min_ks, "total_variation": min_tv},
        },
        "flagged": [f.metric for f in findings if f.flagged],
        "findings": [f.as_dict() for f in findings],
    }


# ---------------------------------------------------------------------------------------------
# The report over stored counts


def parse_window(text: str) -> tuple[str, str]:
    """`YYYY-MM-DD:YYYY-MM-DD` (inclusive) or one day."""
    first, _, last = text.partition(":")
    last = last or first
    for day in (first, last):
        try:
            date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"{text!r} is not a day or a range of days (YYYY-MM-DD:YYYY-MM-DD)") from None
    if last < first:
        raise ValueError(f"{text!r} ends before it starts")
    return first, last


def default_windows(
    days: list[str],
    recent_days: int = 7,
    baseline_days: int = 28,
    recent_window: tuple[str, str] | None = None,
) -> tuple[tuple[str, str], ...]:
    """The last `recent_days` up to the latest day with counts (or `recent_window` when given),
    and the `baseline_days` before it."""
    if not days:
        raise ValueError("no drift counts recorded yet for this tenant")
    last = date.fromisoformat(max(days))
    recent = (last - timedelta(days=recent_days - 1), last)
    if recent_window is not None:
        recent = (date.fromisoformat(recent_window[0]), date.fromisoformat(recent_window[1]))
    baseline = (recent[0] - timedelta(days=baseline_days), recent[0] - timedelta(days=1))
    return (baseline[0].isoformat(), baseline[1].isoformat()), (recent[0].isoformat(), recent[1].isoformat())


def drift_report(
    store: DriftStore,
    *,
    tenant: str,
    baseline: tuple[str, str],
    recent: tuple[str, str],
    channel: str | None = None,
    min_count: int = MIN_COUNT,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    if not baseline[1] < recent[0]:
        raise ValueError("the baseline must end before the recent window starts")
    base = store.counts(tenant=tenant, first_day=baseline[0], last_day=baseline[1], channel=channel)
    now = store.counts(tenant=tenant, first_day=recent[0], last_day=recent[1], channel=channel)
    report = compare(base, now, alpha=alpha, min_count=min_count)
    return {
        "tenant": tenant,
        "channel": channel or "all",
        "baseline": {"from": baseline[0], "to": baseline[1], "inputs": _inputs(base)},
        "recent": {"from": recent[0], "to": recent[1], "inputs": _inputs(now)},
        "rates": {"baseline": _rates(base), "recent": _rates(now)},
    } | report


def _inputs(counts: Mapping[tuple[str, str], int]) -> int:
    return sum(n for (metric, _), n in counts.items() if metric == "outcome")


def _rates(counts: Mapping[tuple[str, str], int]) -> dict[str, float | None]:
    outcomes = {b: n for (m, b), n in counts.items() if m == "outcome"}
    total = sum(outcomes.values())
    decided = total - outcomes.get(Outcome.REJECTED.value, 0)
    cases = outcomes.get(Outcome.REVIEW.value, 0) + outcomes.get(Outcome.DUPLICATE.value, 0)
    return {
        "rejected": outcomes.get(Outcome.REJECTED.value, 0) / total if total else None,
        "cases_per_decided_input": cases / decided if decided else None,
    }


def render_text(report: dict[str, Any]) -> str:
    b, r = report["baseline"], report["recent"]
    lines = [
        f"tenant {report['tenant']}, channel {report['channel']}: recent {r['from']}..{r['to']} "
        f"({r['inputs']} inputs) against baseline {b['from']}..{b['to']} ({b['inputs']} inputs)",
        f"test: {report['test']['numeric']}; {report['test']['categories']}; alpha {report['test']['alpha']} "
        f"({report['test']['correction']}), at least {report['test']['min_count']} per window",
        "",
    ]
    for f in report["findings"]:
        mark = "SHIFT" if f["flagged"] else "ok" if f["test"] != "too_few" else "n/a"
        if f["test"] == "too_few":
            lines.append(f"  {mark:<6}{f['metric']:<26} {f['detail']} ({f['baseline_n']} / {f['recent_n']})")
            continue
        lines.append(
            f"  {mark:<6}{f['metric']:<26} {f['test']} effect {f['effect']:.3f}, "
            f"p {f['p_value']:.2g}; {f['detail']}"
        )
    lines.append("")
    lines.append("flagged: " + (", ".join(report["flagged"]) or "nothing"))
    return "\n".join(lines) + "\n"
