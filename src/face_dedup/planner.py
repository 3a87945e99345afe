"""`face-dedup plan`: what an operating point costs, before a registry chooses it.

For each gallery size and each candidate review threshold the planner gives:
- duplicate recall: the share of genuine scores (a person's new photo against their enrolled
  one) at or above the threshold, read from the genuine curve measured on labelled photos;
- false alarms per search (FPIR = 1 - (1 - FMR)^N, N enrolled faces), FMR read from the
  calibration's impostor tail (`calibration.ImpostorTail`);
- per day: searches, false-alarm cases, duplicate cases, missed duplicates, and officer hours
  at a configured number of minutes per case.

Every figure whose FMR lies beyond the smallest FMR the calibration measured is marked
`extrapolated`: it rests on the tail's straight-line extension, not on measured pairs.
The cost of the cloud index for the same sizes is `face-dedup plan-capacity` (capacity.py).

Pure: no I/O except loading curve files; the CLI formats and prints.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.calibration import ImpostorTail, dedup_thresholds, fmr_for_fpir
from face_dedup.errors import ConfigError

GRID = tuple(round(0.01 * i, 2) for i in range(101))  # thresholds 0.00 .. 1.00
CANDIDATE_FPIRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
MAX_GALLERY = 10**10


@dataclass(frozen=True)
class GenuineCurve:
    """Share of genuine scores at or above each threshold of GRID, measured on labelled photos.

    `kind` says which genuine scores: "pairs" (every same-person pair: a registry holding one
    template per person) or "import" (each later photo's best score against all earlier photos
    of the same person, the way importing the photos as one registry sees them)."""

    model_pack: str
    source: str
    kind: str
    scores: int
    points: tuple[tuple[float, float], ...]  # (threshold, share at or above), thresholds rising

    def recall_at(self, threshold: float) -> float:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return float(np.interp(threshold, xs, ys))

    @classmethod
    def from_scores(
        cls, scores: NDArray[np.floating[Any]], model_pack: str, source: str, kind: str
    ) -> GenuineCurve:
        values = np.sort(np.asarray(scores, dtype=np.float64))
        if len(values) < 10:
            raise ValueError(f"{len(values)} genuine scores are too few for a recall curve (need 10)")
        above = 1.0 - np.searchsorted(values, np.array(GRID), side="left") / len(values)
        points = tuple((t, round(float(a), 6)) for t, a in zip(GRID, above, strict=True))
        return cls(model_pack, source, kind, len(values), points)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GenuineCurve:
        try:
            raw = json.loads(text)
            points = tuple((float(a), float(b)) for a, b in raw["points"])
            curve = cls(
                str(raw["model_pack"]), str(raw["source"]), str(raw["kind"]), int(raw["scores"]), points
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"not a genuine-score curve ({type(exc).__name__}: {exc})") from None
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        if not all(math.isfinite(v) for v in (*xs, *ys)) or curve.scores < 1:
            raise ConfigError("a genuine curve holds only finite numbers and at least one score")
        if len(points) < 2 or any(b <= a for a, b in itertools.pairwise(xs)):
            raise ConfigError("a genuine curve needs at least two points with rising thresholds")
        if any(not 0 <= y <= 1 for y in ys) or any(b > a for a, b in itertools.pairwise(ys)):
            raise ConfigError("a genuine curve's shares must lie in [0, 1] and never rise with the threshold")
        return curve

    @classmethod
    def load(cls, path: Path) -> GenuineCurve:
        return cls.from_json(path.read_text(encoding="utf-8"))


def genuine_path(data_dir: Path, pack_id: str) -> Path:
    """Where `calibrate --labels --save` puts a registry's own genuine curve."""
    return data_dir / "calibration" / f"{pack_id}.genuine.json"


def load_genuine(data_dir: Path, pack_id: str) -> GenuineCurve:
    own = genuine_path(data_dir, pack_id)
    if own.is_file():
        curve = GenuineCurve.load(own)
    else:
        packaged = resources.files("face_dedup.models").joinpath(f"genuine_{pack_id}.json")
        if not packaged.is_file():
            raise ConfigError(
                f"no genuine-score curve for {pack_id}: measure one on labelled photos "
                "(face-dedup calibrate --labels FILE --root DIR --save)"
            )
        curve = GenuineCurve.from_json(packaged.read_text(encoding="utf-8"))
    if curve.model_pack != pack_id:
        raise ConfigError(f"the genuine curve is of {curve.model_pack}, not of {pack_id}")
    return curve


def import_genuine_scores(embeddings: NDArray[np.float32], identities: Sequence[str]) -> NDArray[np.float32]:
    """Each photo of an already-seen person: its best score against the person's earlier photos
    (in the given order). What importing the photos as one registry compares."""
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    best: list[float] = []
    for person in np.unique(labels):
        rows = np.flatnonzero(labels == person)
        if len(rows) < 2:
            continue
        block = embeddings[rows] @ embeddings[rows].T
        best.extend(float(block[i, :i].max()) for i in range(1, len(rows)))
    return np.array(best, dtype=np.float32)


@dataclass(frozen=True)
class Workload:
    daily_searches: int
    duplicate_share: float  # of applications, a person already enrolled
    minutes_per_case: float
    officer_hours_per_day: float

    def __post_init__(self) -> None:
        if self.daily_searches < 0:
            raise ValueError("daily enrollments must not be negative")
        if not 0 <= self.duplicate_share < 1:
            raise ValueError("the duplicate share must be in [0, 1)")
        # `not 0 < x`: NaN fails it too (it would reach --json as NaN, which is not JSON).
        if not 0 < self.minutes_per_case <= 24 * 60 or not 0 < self.officer_hours_per_day <= 24:
            raise ValueError(
                "minutes per case (at most a day) and officer hours per day (at most 24) must be positive"
            )


@dataclass(frozen=True)
class Row:
    threshold: float
    label: str  # why this candidate: "FPIR 1%", "in force", "given"
    fmr: float  # per comparison
    false_alarms_per_search: float  # FPIR
    recall: float
    false_alarm_cases_per_day: float
    duplicate_cases_per_day: float
    missed_duplicates_per_day: float
    officer_hours_per_day: float
    officers: float
    extrapolated: bool  # the FMR (so every false-alarm figure) rests on the extrapolated tail


@dataclass(frozen=True)
class SizePlan:
    gallery_size: int
    rows: tuple[Row, ...]
    recommended: int | None  # index into rows: the highest recall within the target FPIR
    meets_min_recall: bool | None
    cheapest_at_min_recall: int | None = None  # the fewest false alarms with the minimum recall


@dataclass(frozen=True)
class OperatingPlan:
    model_pack: str
    target_fpir: float
    min_recall: float | None
    workload: Workload
    measured_min_fmr: float
    measured_max_threshold: float
    genuine_kind: str
    genuine_scores: int
    sizes: tuple[SizePlan, ...]
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def projected_size(now: int, work: Workload, years: float) -> int:
    """Faces enrolled after `years` of this workload: every application that is not a duplicate
    becomes a new face (a slight overestimate: duplicates missed are enrolled too)."""
    if years < 0:
        raise ValueError("years must not be negative")
    return now + round(work.daily_searches * (1 - work.duplicate_share) * 365 * years)


def false_alarms_per_search(fmr: float, gallery_size: int) -> float:
    return -math.expm1(gallery_size * math.log1p(-min(fmr, 1 - 1e-16)))


def evaluate(
    tail: ImpostorTail, genuine: GenuineCurve, gallery_size: int, threshold: float, label: str, work: Workload
) -> Row:
    fmr = tail.fmr_at(threshold)
    fpir = false_alarms_per_search(fmr, gallery_size)
    recall = genuine.recall_at(threshold)
    new = work.daily_searches * (1 - work.duplicate_share)
    dup = work.daily_searches * work.duplicate_share
    alarms, found = new * fpir, dup * recall
    hours = (alarms + found) * work.minutes_per_case / 60
    return Row(
        threshold=round(threshold, 4),
        label=label,
        fmr=fmr,
        false_alarms_per_search=fpir,
        recall=recall,
        false_alarm_cases_per_day=alarms,
        duplicate_cases_per_day=found,
        missed_duplicates_per_day=dup - found,
        officer_hours_per_day=hours,
        officers=hours / work.officer_hours_per_day,
        extrapolated=threshold > tail.points[-1][1],
    )


def plan(
    tail: ImpostorTail,
    genuine: GenuineCurve,
    gallery_sizes: Sequence[int],
    work: Workload,
    *,
    target_fpir: float,
    min_recall: float | None = None,
    in_force: dict[int, float] | None = None,
    thresholds: Sequence[float] = (),
) -> OperatingPlan:
    """Rows per gallery size: the thresholds that give each of CANDIDATE_FPIRS (and the
    target), the threshold `in_force` for that size (the service's, with its floors), and
    any `thresholds` given. Sorted by threshold."""
    if tail.model_pack != genuine.model_pack:
        raise ConfigError(
            f"the calibration is of {tail.model_pack}, the genuine curve of {genuine.model_pack}"
        )
    if not gallery_sizes or any(not 1 <= n <= MAX_GALLERY for n in gallery_sizes):
        raise ValueError(f"gallery sizes must be between 1 and {MAX_GALLERY:,}")
    if not 0 < target_fpir < 1 or (min_recall is not None and not 0 < min_recall <= 1):
        raise ValueError("the target FPIR must be in (0, 1) and the minimum recall in (0, 1]")
    if any(not 0 < t <= 1 for t in thresholds):
        raise ValueError("candidate thresholds must be cosine scores in (0, 1]")
    sizes = []
    for n in sorted(set(gallery_sizes)):
        candidates: dict[float, str] = {}
        for fpir in sorted({*CANDIDATE_FPIRS, target_fpir}, reverse=True):
            t = round(tail.threshold_for_fmr(fmr_for_fpir(fpir, n)), 4)
            candidates.setdefault(t, f"FPIR {fpir:g}")
        for t in thresholds:
            candidates[round(t, 4)] = "given"
        if in_force and n in in_force:
            candidates[round(in_force[n], 4)] = "in force"
        rows = tuple(evaluate(tail, genuine, n, t, candidates[t], work) for t in sorted(candidates))
        allowed = [i for i, r in enumerate(rows) if r.false_alarms_per_search <= target_fpir * (1 + 1e-9)]
        best = max(allowed, key=lambda i: rows[i].recall) if allowed else None
        meets = None if min_recall is None or best is None else rows[best].recall >= min_recall
        enough = [i for i, r in enumerate(rows) if min_recall is not None and r.recall >= min_recall]
        cheapest = max(enough, key=lambda i: rows[i].threshold) if enough else None
        sizes.append(SizePlan(n, rows, best, meets, cheapest))
    notes = (
        f"FMR measured down to {tail.measured_min_fmr:.1e} (threshold {tail.points[-1][1]:.3f}); "
        "rows above that threshold are extrapolated (marked *)",
        f"recall from {genuine.scores:,} genuine scores ({genuine.kind}: {genuine.source})",
    )
    return OperatingPlan(
        model_pack=tail.model_pack,
        target_fpir=target_fpir,
        min_recall=min_recall,
        workload=work,
        measured_min_fmr=tail.measured_min_fmr,
        measured_max_threshold=tail.points[-1][1],
        genuine_kind=genuine.kind,
        genuine_scores=genuine.scores,
        sizes=tuple(sizes),
        notes=notes,
    )


def in_force_thresholds(
    tail: ImpostorTail, sizes: Sequence[int], target_fpir: float, duplicate_fpir: float, floor_fmr: float
) -> dict[int, float]:
    """The review threshold the service would use at each size (calibration.dedup_thresholds)."""
    floor = tail.threshold_for_fmr(floor_fmr)
    return {n: dedup_thresholds(tail, n, target_fpir, duplicate_fpir, floor).review for n in sizes}


def predict_import(
    tail: ImpostorTail,
    genuine: GenuineCurve,
    duplicate_positions: Sequence[int],
    new_positions: Sequence[int],
    threshold_for_gallery: Any,
) -> tuple[float, float]:
    """Expected duplicate recall and false-alarm rate of importing photos in order into an
    empty registry, from the curves alone: position i searches a gallery of i faces at the
    threshold in force then. Used to check the planner against a real import."""
    recalls = [genuine.recall_at(float(threshold_for_gallery(i))) for i in duplicate_positions]
    alarms = [
        false_alarms_per_search(tail.fmr_at(float(threshold_for_gallery(i))), i)
        for i in new_positions
        if i > 0
    ] + [0.0 for i in new_positions if i == 0]
    return float(np.mean(recalls)), float(np.mean(alarms))


# ---------------------------------------------------------------------------------------------
# Output


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 1e-4 else f"{x:.1e}"


def render(result: OperatingPlan) -> list[str]:
    w = result.workload
    lines = [
        f"Operating points for {result.model_pack}: {w.daily_searches:,} searches a day, "
        f"{100 * w.duplicate_share:g}% of them duplicates, {w.minutes_per_case:g} min per case, "
        f"{w.officer_hours_per_day:g} h per officer-day; "
        f"target false alarms per search {result.target_fpir:g}"
        + (f", minimum recall {100 * result.min_recall:g}%" if result.min_recall else ""),
    ]
    header = (
        f"  {'threshold':>9} {'why':<11} {'FMR':>8} {'FA/search':>9} {'recall':>7} "
        f"{'FA/day':>8} {'dup/day':>8} {'missed/day':>10} {'hours/day':>9} {'officers':>8}"
    )
    for size in result.sizes:
        lines += ["", f"Gallery of {size.gallery_size:,} faces", header]
        for i, r in enumerate(size.rows):
            mark = "*" if r.extrapolated else " "
            pick = " <- recommended" if i == size.recommended else ""
            lines.append(
                f"  {r.threshold:>9.3f} {r.label:<11} {r.fmr:>7.1e}{mark} "
                f"{_pct(r.false_alarms_per_search):>8}{mark} {_pct(r.recall):>7} "
                f"{r.false_alarm_cases_per_day:>7.1f}{mark} {r.duplicate_cases_per_day:>8.1f} "
                f"{r.missed_duplicates_per_day:>10.1f} {r.officer_hours_per_day:>8.1f}{mark} "
                f"{r.officers:>8.2f}{pick}"
            )
        if size.recommended is None:
            lines.append("  no candidate keeps false alarms within the target")
        elif size.meets_min_recall is False:
            lines.append("  the minimum recall cannot be met within the target false-alarm rate")
        if result.min_recall is not None and size.meets_min_recall is not True:
            if size.cheapest_at_min_recall is None:
                lines.append("  no candidate threshold reaches the minimum recall")
            else:
                r = size.rows[size.cheapest_at_min_recall]
                lines.append(
                    f"  the minimum recall needs threshold {r.threshold:.3f} or lower: "
                    f"{_pct(r.false_alarms_per_search)} false alarms per search, "
                    f"{r.officer_hours_per_day:.1f} officer hours a day"
                    + (" (extrapolated)" if r.extrapolated else "")
                )
    lines += ["", *(f"* {n}" if i == 0 else f"  {n}" for i, n in enumerate(result.notes))]
    lines.append("  cost of the cloud index for these sizes: face-dedup plan-capacity N")
    return lines


def det_curves(
    tail: ImpostorTail, genuine: GenuineCurve, sizes: Sequence[int]
) -> dict[int, list[tuple[float, float, bool]]]:
    """Per gallery size: (false alarms per search, recall, extrapolated) over thresholds."""
    curves: dict[int, list[tuple[float, float, bool]]] = {}
    for n in sizes:
        points = []
        for t in np.arange(0.2, 0.9001, 0.005):
            fpir = false_alarms_per_search(tail.fmr_at(float(t)), n)
            points.append((fpir, genuine.recall_at(float(t)), float(t) > tail.points[-1][1]))
        curves[n] = points
    return curves


def render_svg(result: OperatingPlan, curves: dict[int, list[tuple[float, float, bool]]]) -> str:
    """DET-style: false alarms per search (log, 1e-4..1) across, duplicate recall up. Dashed
    where the FMR is extrapolated. Hand-written SVG like group_plot.py; text escaped."""
    from xml.sax.saxutils import escape

    colours = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
    width, height, left, top, plot_w, plot_h = 640, 420, 60, 40, 420, 320
    lo, hi = -4.0, 0.0

    def x(fpir: float) -> float:
        return left + (min(hi, max(lo, math.log10(max(fpir, 1e-12)))) - lo) / (hi - lo) * plot_w

    def y(recall: float) -> float:
        return top + (1 - recall) * plot_h

    parts = [
        f'<text x="{left}" y="22" font-weight="bold">'
        f"{escape(f'Duplicate recall vs false alarms per search ({result.model_pack})')}</text>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>',
    ]
    for e in range(-4, 1):
        parts.append(f'<text x="{x(10.0**e) - 12:.1f}" y="{top + plot_h + 16}" font-size="11">1e{e}</text>')
        parts.append(
            f'<line x1="{x(10.0**e):.1f}" x2="{x(10.0**e):.1f}" y1="{top}" y2="{top + plot_h}" '
            'stroke="#ddd"/>'
        )
    for r in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(f'<text x="{left - 36}" y="{y(r) + 4:.1f}" font-size="11">{int(100 * r)}%</text>')
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>'
        )
    parts.append(
        f'<text x="{left + 90}" y="{top + plot_h + 34}" font-size="12">'
        "false alarms per search (FPIR, log)</text>"
    )
    for k, (n, points) in enumerate(sorted(curves.items())):
        colour = colours[k % len(colours)]
        for extrapolated in (False, True):
            seg = [(x(f), y(r)) for f, r, e in points if e == extrapolated and 10**lo <= f < 0.99]
            if len(seg) < 2:
                continue
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
            dash = ' stroke-dasharray="5,4"' if extrapolated else ""
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        ly = top + 16 + 18 * k
        parts.append(
            f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 32}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{left + plot_w + 38}" y="{ly + 4}" font-size="12">{escape(f"{n:,} faces")}</text>'
        )
    note_y = top + 16 + 18 * len(curves) + 10
    parts.append(f'<text x="{left + plot_w + 12}" y="{note_y}" font-size="11">dashed: FMR</text>')
    parts.append(f'<text x="{left + plot_w + 12}" y="{note_y + 14}" font-size="11">extrapolated</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
        '<rect width="100%" height="100%" fill="white"/>' + "".join(parts) + "</svg>\n"
    )
