"""`face-dedup calibrate --group-by COLUMN`: error rates per group at the thresholds in force.

The thresholds are the registry's own (its calibration, or the model pack's shipped one, and
its settings), not ones re-fitted to the labelled photos: the question is how the matcher as
configured treats each group. They are:
- `verify`: 1:1 verification (settings.verify_fmr);
- `review`: 1:N, the review threshold for a stated gallery size (target FPIR);
- `auto_link`: 1:N, the threshold above which a match is linked as a likely duplicate.

Groups come only from the labels file's column: nothing here looks at a face to decide one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup import fairness as fx
from face_dedup.calibration import ImpostorTail
from face_dedup.decision import DecisionPolicy
from face_dedup.domain import Case
from face_dedup.queries import TenantReader
from face_dedup.settings import Settings

MAX_GROUPS = 50  # more distinct values than this is an identifier, not a group
MAX_GROUP_LENGTH = 64


def thresholds_in_force(settings: Settings, tail: ImpostorTail, gallery_size: int) -> dict[str, float]:
    """The service's rule (DecisionPolicy: thresholds for the gallery size, verify)."""
    policy = DecisionPolicy.from_settings(settings, tail)
    dedup = policy.thresholds(gallery_size)
    return {
        "verify": policy.verify_threshold,
        "review": dedup.review,
        "auto_link": dedup.duplicate,
    }


def clean_groups(values: Sequence[str], column: str) -> list[str]:
    """Validate a labels file's group column: every photo labelled, few distinct values."""
    missing = [i for i, v in enumerate(values) if not v]
    if missing:
        raise ValueError(
            f"column {column!r} is empty on {len(missing)} rows (first: data row {missing[0] + 1})"
        )
    too_long = [v for v in values if len(v) > MAX_GROUP_LENGTH]
    if too_long:
        raise ValueError(f"column {column!r} has values longer than {MAX_GROUP_LENGTH} characters")
    # Group names reach a terminal, an SVG and the keys of the report: control and format
    # characters (terminal escapes, bidi overrides) are refused, and so is the separator that
    # names a pair of groups ("A|B"), which a group of that name would overwrite.
    odd = [i for i, v in enumerate(values) if not v.isprintable() or fx.PAIR_SEPARATOR in v]
    if odd:
        raise ValueError(
            f"column {column!r} has a value with a control character or {fx.PAIR_SEPARATOR!r} "
            f"on {len(odd)} rows (first: data row {odd[0] + 1})"
        )
    distinct = set(values)
    if len(distinct) > MAX_GROUPS:
        raise ValueError(
            f"column {column!r} has {len(distinct)} distinct values (at most {MAX_GROUPS}): "
            "group photos by a category, not by an identifier"
        )
    if len(distinct) < 2:
        raise ValueError(f"column {column!r} has a single value: nothing to compare")
    return list(values)


def group_report(
    settings: Settings,
    tail: ImpostorTail,
    *,
    embeddings: NDArray[np.float32],
    identities: Sequence[str],
    groups: Sequence[str],
    reasons: Sequence[str | None],
    column: str,
    gallery_size: int,
    resamples: int = fx.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group FMR (within/across), FNMR and FTE at each threshold in force, and duplicate
    recall / false alarms of a simulated import (photos in file order) per group."""
    data = fx.Labelled.from_labels(identities, groups, reasons)
    resampler = fx.Resampler(data.person_strata(), resamples, seed)
    thresholds = thresholds_in_force(settings, tail, gallery_size)
    counts = fx.pair_counts(embeddings, data, min(thresholds.values()))
    usable_people = {
        name: len(np.unique(data.person[(data.group == code) & data.usable]))
        for code, name in enumerate(data.group_names)
    }

    def review(n: int) -> float:
        return thresholds_in_force(settings, tail, n)["review"]

    items = fx.simulate_dedup_items(embeddings, data, review)
    return {
        "group_by": column,
        "groups": {
            name: {
                "photos": int(np.sum(data.group == code)),
                "people": data.people_per_group()[name],
                "people_with_usable_photos": usable_people[name],
            }
            for code, name in enumerate(data.group_names)
        },
        "resampled": "people, within each group",
        "resamples": resamples,
        "confidence": fx.CONFIDENCE,
        "calibration": {"source": tail.source, "model_pack": tail.model_pack},
        "gallery_size": gallery_size,
        "thresholds": {
            name: fx.rates_at_threshold(counts, data, resampler, value) | {"meaning": _MEANING[name]}
            for name, value in thresholds.items()
        },
        "failure_to_enroll": fx.failure_to_enroll(data, resampler),
        "dedup": fx.dedup_by_group(items, data, resampler)
        | {
            "order": "photos imported in the labels file's order; "
            "review threshold for the gallery at each step"
        },
    }


_MEANING = {
    "verify": "1:1 verification threshold (verify_fmr)",
    "review": "1:N review threshold at the stated gallery size (target_fpir)",
    "auto_link": "1:N likely-duplicate threshold at the stated gallery size (duplicate_fpir)",
}


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    if value and value < 1e-3:
        return f"{value:.1e}"
    return f"{100 * value:.2f}%"


def _cell(estimate: dict[str, Any]) -> str:
    if estimate.get("value") is None:
        return "-"
    return f"{_pct(estimate['value'])} [{_pct(estimate['ci_low'])}, {_pct(estimate['ci_high'])}]"


def render_text(report: dict[str, Any]) -> str:
    """The report for people: one table per threshold. Plain text (values are data)."""
    lines = [
        f"Error rates by {report['group_by']!r}, model pack {report['calibration']['model_pack']}, "
        f"{int(report['confidence'] * 100)}% intervals from {report['resamples']} resamples of people",
        "groups: "
        + ", ".join(
            f"{name} ({g['people']} people, {g['photos']} photos)" for name, g in report["groups"].items()
        ),
        "",
    ]
    for name, block in report["thresholds"].items():
        size = f" (gallery {report['gallery_size']:,})" if name != "verify" else ""
        lines.append(f"{name} threshold {block['threshold']:.4f}{size}: {block['meaning']}")
        lines.append(f"  {'group':<24} {'FNMR':<34} FMR")
        for group in report["groups"]:
            fnmr = block["fnmr"].get(group, {})
            lines.append(f"  {group:<24} {_cell(fnmr):<34} {_cell(block['fmr'].get(group, {}))}")
        for pair, estimate in block["fmr"].items():
            if estimate["kind"] == "across":
                lines.append(f"  {pair:<24} {'(pairs across groups)':<34} {_cell(estimate)}")
        lines.extend(_comparisons(block["worst_vs_best"]))
        lines.append("")
    fte = report["failure_to_enroll"]
    lines.append("failure to enroll (photos rejected)")
    for group, estimate in fte["groups"].items():
        reasons = ", ".join(
            f"{r} {_pct(e['value'])}" for r, e in estimate["by_reason"].items() if e["errors"]
        )
        lines.append(f"  {group:<24} {_cell(estimate):<34} {reasons}")
    if fte["worst_vs_best"]:
        lines.extend(_comparisons([fte["worst_vs_best"]]))
    lines.append("")
    lines.append("de-duplication (simulated import, file order): duplicates found / false alarms")
    for group, entry in report["dedup"]["groups"].items():
        lines.append(
            f"  {group:<24} {_cell(entry['duplicate_recall']):<34} {_cell(entry['false_alarm_rate'])}"
        )
    lines.extend(_comparisons(report["dedup"]["worst_vs_best"]))
    return "\n".join(lines) + "\n"


def _comparisons(comparisons: list[dict[str, Any]], unit: str = "people") -> list[str]:
    lines = []
    for c in comparisons:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}"
        low, high = c["ratio_ci"]
        span = "" if low is None else f" [{low:.2f}, {'unbounded' if high is None else f'{high:.2f}'}]"
        verdict = "differs" if c["differs"] else "no difference shown"
        if c.get("too_few_to_tell"):
            verdict = f"too few {unit} to tell (fewer than {fx.MIN_PEOPLE_FOR_VERDICT} in a group)"
        lines.append(f"  {c['metric']}: worst {c['worst']} / best {c['best']} = {ratio}{span}; {verdict}")
    return lines


# ---------------------------------------------------------------------------------------------
# Officers' outcomes per group (from the registry's cases)


def first_decision(case: Case) -> str | None:
    """The first officer's decision on the case (a later overturn does not rewrite it)."""
    for entry in case.history:
        if entry.get("decision"):
            return str(entry["decision"])
    return None


def applicant_groups(rows: Sequence[dict[str, str]], column: str) -> dict[str, str]:
    """`application_id` -> group from a labels file's rows. An application listed twice with two
    different groups is refused (which one would count is a guess), as is an empty id."""
    groups = clean_groups([r[column] for r in rows], column)
    mapping: dict[str, str] = {}
    for index, (row, group) in enumerate(zip(rows, groups, strict=True)):
        application = row["application_id"]
        if not application:
            raise ValueError(f"empty application_id on data row {index + 1}")
        if mapping.setdefault(application, group) != group:
            raise ValueError(f"data row {index + 1}: an application_id already given another {column!r}")
    return mapping


def case_groups_report(
    reader: TenantReader,
    labels: dict[str, str],
    column: str,
    resamples: int = fx.DEFAULT_RESAMPLES,
    page: int = 500,
) -> dict[str, Any]:
    """Cases of the reader's tenant by the group of the applicant (the probe's application id,
    looked up in `labels`); cases whose applicant is not labelled are counted, not guessed.
    Read through `queries` like every other read: its tenant and role checks apply."""
    groups: list[str] = []
    decisions: list[str | None] = []
    overturned: list[bool] = []
    unlabelled = 0
    offset = 0
    while True:
        cases = reader.cases(limit=page, offset=offset)
        if not cases:
            break
        offset += len(cases)
        probes = reader.records([c.probe_record_id for c in cases])
        for case in cases:
            record = probes.get(case.probe_record_id)
            group = labels.get(record.application_id or "") if record is not None else None
            if group is None:
                unlabelled += 1
                continue
            groups.append(group)
            decisions.append(first_decision(case))
            overturned.append(any(entry.get("action") == "overturned" for entry in case.history))
    if len(set(groups)) < 2:
        raise ValueError(
            f"cases of {len(set(groups))} labelled group(s) only ({unlabelled} cases unlabelled): "
            "nothing to compare"
        )
    report = fx.case_outcomes_by_group(groups, decisions, overturned, resamples=resamples)
    return {"group_by": column, "tenant": reader.tenant, "unlabelled_cases": unlabelled} | report


def render_cases_text(report: dict[str, Any]) -> str:
    lines = [
        f"Officers' outcomes by {report['group_by']!r}, tenant {report['tenant']} "
        f"({report['unlabelled_cases']} cases without a labelled applicant left out)",
        f"  {'group':<24} {'cases':>6} {'decided':>8}  shares of decisions [95% CI]; overturned",
    ]
    for group, entry in report["groups"].items():
        shares = ", ".join(
            f"{kind} {_cell(entry[kind])}"
            for kind in ("same_person", "different_people", "cannot_tell")
            if kind in entry
        )
        lines.append(
            f"  {group:<24} {entry['cases']:>6} {entry['decided']:>8}  {shares}; "
            f"overturned {_cell(entry['overturned'])}"
        )
    lines.extend(_comparisons(report["worst_vs_best"], unit="cases"))
    return "\n".join(lines) + "\n"
