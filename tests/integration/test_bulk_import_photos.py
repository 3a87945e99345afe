"""`face-dedup import --bulk` on the shared labelled photos gives the same outcomes as the plain
import, photo for photo (outcome, reason, candidates and their scores, cases): people with
several photos, in a shuffled order so that each person's photos are far apart. Skips without
../shared."""

from __future__ import annotations

import random
from pathlib import Path

from typer.testing import CliRunner

from face_dedup.cli import app
from face_dedup.settings import Settings
from tests.unit.test_bulk_import import _comparable


def test_bulk_and_sequential_import_decide_the_same(
    faces_root: Path, base_settings: Settings, tmp_path: Path
) -> None:
    people = sorted(p for p in (faces_root / "lfw").iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:45]
    photos = [str(photo) for person in people for photo in sorted(person.glob("*.jpg"))[:4]]
    random.Random(12).shuffle(photos)
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(photos) + "\n")
    reports = {}
    for mode in ("sequential", "bulk"):
        reports[mode] = tmp_path / f"{mode}.jsonl"
        command = ["import", str(listing), "--report", str(reports[mode]), "--workers", "2", "--json"]
        command += ["--data-dir", str(tmp_path / mode), "--models-dir", str(base_settings.models_dir)]
        result = CliRunner().invoke(app, [*command, *(["--bulk"] if mode == "bulk" else [])])
        assert result.exit_code == 0, result.output
    sequential, bulk = _comparable(reports["sequential"]), _comparable(reports["bulk"])
    assert bulk == sequential
    assert len(bulk) == len(photos)
    assert sum(1 for line in bulk if line["candidates"]) >= 10  # duplicates were found and decided
