"""The per-group report as one SVG: a panel per threshold and rate, a bar per group with its
confidence interval. Written by hand (no plotting dependency); labels are escaped text."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

PANEL_W, ROW_H, LABEL_W, PAD = 520, 22, 150, 10
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _panels(report: dict[str, Any]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    panels = []
    for name, block in report["thresholds"].items():
        panels.append((f"FNMR at {name} ({block['threshold']:.3f})", block["fnmr"]))
        panels.append((f"FMR at {name} ({block['threshold']:.3f}), within and across groups", block["fmr"]))
    panels.append(("failure to enroll", report["failure_to_enroll"]["groups"]))
    dedup = report["dedup"]["groups"]
    panels.append(
        ("duplicates missed (1 - recall)", {g: _missed(e["duplicate_recall"]) for g, e in dedup.items()})
    )
    panels.append(("false alarms (new people)", {g: e["false_alarm_rate"] for g, e in dedup.items()}))
    return panels


def _missed(recall: dict[str, Any]) -> dict[str, Any]:
    if recall.get("value") is None:
        return recall
    return {"value": 1 - recall["value"], "ci_low": 1 - recall["ci_high"], "ci_high": 1 - recall["ci_low"]}


def _fmt(value: float) -> str:
    return f"{value:.1e}" if 0 < value < 1e-3 else f"{100 * value:.2f}%"


def render_svg(report: dict[str, Any]) -> str:
    parts: list[str] = []
    y = PAD + 20
    title = f"Error rates by {report['group_by']} ({int(report['confidence'] * 100)}% CI, people resampled)"
    parts.append(f'<text x="{PAD}" y="{PAD + 12}" font-weight="bold">{escape(title)}</text>')
    panels = _panels(report)
    palette: dict[str, str] = {}  # one colour per group (and pair of groups) in every panel
    for _, rows in panels:
        for group in rows:
            palette.setdefault(group, COLOURS[len(palette) % len(COLOURS)])
    for title, rows in panels:
        measured = {k: v for k, v in rows.items() if v.get("value") is not None}
        top = max([float(v["ci_high"] or v["value"]) for v in measured.values()] + [1e-12])
        parts.append(f'<text x="{PAD}" y="{y + 14}" font-size="13">{escape(title)}</text>')
        y += 22
        for group, estimate in rows.items():
            parts.append(f'<text x="{PAD}" y="{y + 15}" font-size="12">{escape(group)}</text>')
            if estimate.get("value") is not None:
                scale = (PANEL_W - LABEL_W - 90) / top
                width = float(estimate["value"]) * scale
                low = LABEL_W + float(estimate["ci_low"]) * scale
                high = LABEL_W + float(estimate["ci_high"]) * scale
                colour = palette[group]
                parts.append(
                    f'<rect x="{LABEL_W}" y="{y + 4}" width="{width:.1f}" '
                    f'height="{ROW_H - 8}" fill="{colour}"/>'
                )
                parts.append(
                    f'<line x1="{low:.1f}" x2="{high:.1f}" y1="{y + ROW_H / 2}" y2="{y + ROW_H / 2}" '
                    'stroke="black"/>'
                )
                parts.append(
                    f'<text x="{high + 6:.1f}" y="{y + 15}" font-size="11">'
                    f"{_fmt(float(estimate['value']))}</text>"
                )
            y += ROW_H
        y += PAD
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_W}" height="{y + PAD}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "".join(parts)
        + "</svg>\n"
    )
