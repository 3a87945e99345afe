"""Speed per stage (one core) and import throughput (whole machine), with the real models.

    python bench/speed.py [--shared ../shared/data/faces] [--sample 300] [--skip-import]

Per stage: decode, detect (incl. orientation check), align+quality, embed, measured on a
sample of LFW photos with onnxruntime and OpenCV limited to one thread. Import: the whole LFW
set through `run_import` (the CLI's code path) into an empty registry, all cores.
Run it on a quiet machine: numbers taken while something else runs are not worth keeping.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from face_dedup.bootstrap import build_engine, build_service
from face_dedup.importer import collect_inputs, run_import
from face_dedup.models.registry import PACKS
from face_dedup.settings import Settings
from face_dedup.vision.align import fit_similarity, warp_to_template
from face_dedup.vision.decode import decode_image
from face_dedup.vision.quality import crop_measures


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stage_timings(settings: Settings, files: list[Path]) -> dict[str, object]:
    engine = build_engine(settings, threads=1)
    template = np.asarray(engine.pack.contract.template)
    blobs = [f.read_bytes() for f in files]
    for data in blobs[:5]:  # warm up
        engine.process(data)
    decode, detect, align, embed, whole = [], [], [], [], []
    for data in blobs:
        t0 = time.perf_counter()
        decoded = decode_image(data)
        t1 = time.perf_counter()
        faces = engine.detect(decoded.rgb)
        t2 = time.perf_counter()
        if not faces:
            continue
        fit = fit_similarity(faces[0].landmarks, template)
        crop = warp_to_template(decoded.rgb, fit, engine.pack.contract.input_size)
        crop_measures(crop)
        t3 = time.perf_counter()
        engine.embed(crop)
        t4 = time.perf_counter()
        engine.process(data)
        t5 = time.perf_counter()
        decode.append(t1 - t0)
        detect.append(t2 - t1)
        align.append(t3 - t2)
        embed.append(t4 - t3)
        whole.append(t5 - t4)
    return {
        "images": len(whole),
        "decode": percentiles(decode),
        "detect_one_orientation": percentiles(detect),
        "align_and_quality": percentiles(align),
        "embed": percentiles(embed),
        "per_face_total_engine_process": percentiles(whole),
    }


def import_throughput(settings: Settings, folder: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="face-dedup-bench-") as tmp:
        run_settings = settings.with_overrides(data_dir=Path(tmp))
        service, adapters = build_service(run_settings)
        inputs = collect_inputs(folder)
        try:
            summary = run_import(service, inputs, workers=run_settings.worker_count)
        finally:
            adapters.close()
    return {"workers": run_settings.worker_count, **summary.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--packs", nargs="*", default=sorted(PACKS))
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = args.shared.resolve()
    files = sorted((root / "lfw").glob("*/*.jpg"))[:: max(1, 3811 // args.sample)][: args.sample]
    big = sorted((root / "photos" / "deepface").glob("*/*.jpg"), key=lambda p: -p.stat().st_size)[:10]
    report: dict[str, object] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime_threads_per_worker": 1,
    }
    for pack in args.packs:
        settings = Settings.load(model_pack=pack)
        entry: dict[str, object] = {
            "lfw_150px": stage_timings(settings, files),
            "multi_megapixel": stage_timings(settings, big),
        }
        if not args.skip_import:
            entry["import_lfw"] = import_throughput(settings, root / "lfw")
        report[pack] = entry
        print(json.dumps({pack: entry}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
