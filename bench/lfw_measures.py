"""Quality measures (detector score, sharpness, pose, ...) of the LFW development photos, cached.

    python bench/lfw_measures.py   # writes .cache/bench/lfw-measures.json (gitignored)

The measures are what the engine reports with each template (`FaceTemplate.measures`): no
biometric data. bench/multi_template.py and bench/score_norm.py read them for quality-weighted
fusion and quality-conditioned thresholds.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from face_dedup.bootstrap import build_engine
from face_dedup.models.registry import get_pack
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
OUT = ROOT / ".cache" / "bench" / "lfw-measures.json"


def main() -> None:
    settings = Settings.load(workers=1)
    engine = build_engine(settings, get_pack(settings.model_pack))
    with (FACES / "lfw_sex.csv").open(newline="", encoding="utf-8") as handle:
        files = sorted(row["file"] for row in csv.DictReader(handle))
    done: dict[str, dict[str, float]] = json.loads(OUT.read_text()) if OUT.is_file() else {}
    start = time.monotonic()
    for index, name in enumerate(files):
        if name in done:
            continue
        result = engine.process((FACES / name).read_bytes())
        if isinstance(result, FaceTemplate):
            done[name] = {k: float(v) for k, v in result.measures.items()}
        if index % 500 == 0:
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(done))
            print(f"{index}/{len(files)} in {time.monotonic() - start:.0f} s", flush=True)
    OUT.write_text(json.dumps(done))
    print(f"{len(done)} photos measured -> {OUT}")


if __name__ == "__main__":
    main()
