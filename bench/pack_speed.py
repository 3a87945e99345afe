"""Whole-pipeline time of model packs side by side, in the same run, alternating per photo.

    python bench/pack_speed.py [--engines yunet-sface-flip-v1:openvino-bf16 yunet-sface-flip-v1:onnxruntime
        yunet-sface-int8-v1:onnxruntime] [--shared ../shared/data/faces] [--sample 300] [--selfies 40]
        [--json out.json]

Each photo goes through `FaceEngine.process` (decode, orientation checks, detect, align,
quality, embed) of every engine (a pack on an embedder runtime, vision/runtimes.py), the order
alternating from photo to photo so the machine's load falls on all alike; onnxruntime, OpenVINO
and OpenCV on one thread per call. Reported per engine: CPU and wall time per photo (median,
p95), and the embedder alone on the aligned crop. CPU is the process's (`time.process_time`), not
the calling thread's: OpenVINO runs a call on its own stream thread, which thread time would miss;
one photo at a time, so the process's CPU is that photo's.
Two sets: LFW-size photos (a spread sample of LFW) and 12 MP JPEGs made in memory from
bench/selfie.py's sample (the selfie path on, as the service runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

from face_dedup.bootstrap import build_engine
from face_dedup.models.registry import DEFAULT_PACK_ID, YUNET_SFACE_INT8
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceEngine, FaceTemplate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfie import sample_photos, upscaled_jpeg


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def side_by_side(engines: dict[str, FaceEngine], blobs: list[bytes]) -> dict[str, object]:
    names = list(engines)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    embed_cpu: dict[str, list[float]] = {n: [] for n in names}
    for data in blobs[:3]:  # warm up every engine
        for engine in engines.values():
            engine.process(data)
    for n, data in enumerate(blobs):
        for name in names if n % 2 == 0 else names[::-1]:
            engine = engines[name]
            w, c = time.perf_counter(), time.process_time()
            result = engine.process(data)
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
            if isinstance(result, FaceTemplate):
                c = time.process_time()
                engine.embed(result.aligned_crop)
                embed_cpu[name].append(time.process_time() - c)
    return {
        name: {
            "photos": len(cpu[name]),
            "process_cpu": percentiles(cpu[name]),
            "wall": percentiles(wall[name]),
            "embed_process_cpu": percentiles(embed_cpu[name]),
        }
        for name in names
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        default=[
            f"{DEFAULT_PACK_ID}:openvino-bf16",
            f"{DEFAULT_PACK_ID}:onnxruntime",
            f"{YUNET_SFACE_INT8.id}:onnxruntime",
        ],
        help="pack:runtime (auto, onnxruntime, openvino-bf16)",
    )
    parser.add_argument("--sample", type=int, default=300, help="LFW photos")
    parser.add_argument("--selfies", type=int, default=40, help="LFW photos among the 12 MP JPEGs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = args.shared.resolve()
    engines = {}
    for spec in args.engines:
        pack, _, runtime = spec.partition(":")
        settings = Settings.load(model_pack=pack, embedder_runtime=runtime or "auto")
        engines[spec] = build_engine(settings, threads=1)
    report: dict[str, object] = {"runtimes": {spec: e.embedder_runtime for spec, e in engines.items()}}
    lfw = sorted((root / "lfw").glob("*/*.jpg"))
    small = [p.read_bytes() for p in lfw[:: max(1, len(lfw) // args.sample)][: args.sample]]
    report["load_average_start"] = os.getloadavg()
    report["lfw_size"] = side_by_side(engines, small)
    print(json.dumps(report, indent=2), flush=True)
    if args.selfies >= 0:
        big = [upscaled_jpeg(p) for p in sample_photos(root, args.selfies)]  # in memory only
        report["jpeg_12mp"] = side_by_side(engines, big)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
