"""The selfie path against the ordinary path on 12 MP JPEGs, in the same run.

    python bench/selfie.py [--shared ../shared/data/faces] [--lfw 40] [--json out.json]

Phone photos are large JPEGs. The shared photos (a sample of LFW and every multi-megapixel JPEG
of `photos/`) are upscaled to about 12 MP and encoded as JPEG (quality 90) in memory (never
written to disk), then each goes through `FaceEngine.process` with the selfie path on and off,
one after the other (so the machine's load affects both alike), onnxruntime and OpenCV on one
thread. Reported: wall and thread-CPU time per photo (median, p95), whether both paths
reached the same decision (template, or the same rejection reason), and the cosine between
the two templates where both enrolled with the photo turned the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
from PIL import Image

from face_dedup.bootstrap import build_engine
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceEngine, FaceTemplate

MEGAPIXELS = 12.0


def upscaled_jpeg(path: Path, megapixels: float = MEGAPIXELS) -> bytes:
    """The photo resized (bicubic, upright, aspect kept) to about `megapixels`, as a JPEG."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    factor = (megapixels * 1e6 / (rgb.width * rgb.height)) ** 0.5
    big = rgb.resize((round(rgb.width * factor), round(rgb.height * factor)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    return out.getvalue()


def sample_photos(root: Path, lfw: int) -> list[Path]:
    people = sorted((root / "lfw").glob("*/*.jpg"))
    photos = sorted(p for p in (root / "photos").glob("*/*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    return people[:: max(1, len(people) // max(lfw, 1))][:lfw] + photos


def outcome(result: object) -> str:
    return "template" if isinstance(result, FaceTemplate) else str(getattr(result, "reason", "?"))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


def compare(fast: FaceEngine, full: FaceEngine, blobs: list[bytes]) -> dict[str, object]:
    timings: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in ("selfie", "ordinary")
    }
    cosines: list[float] = []
    differ: list[dict[str, str]] = []
    turned: list[dict[str, object]] = []
    for n, data in enumerate(blobs):
        results = {}
        # alternate which path runs first, so neither always meets a warm cache
        order = [("selfie", fast), ("ordinary", full)][:: 1 if n % 2 else -1]
        for name, engine in order:
            wall, cpu = time.perf_counter(), time.thread_time()
            results[name] = engine.process(data)
            timings[name]["cpu"].append(time.thread_time() - cpu)
            timings[name]["wall"].append(time.perf_counter() - wall)
        a, b = results["selfie"], results["ordinary"]
        if outcome(a) != outcome(b):
            differ.append({"photo": str(n), "selfie": outcome(a), "ordinary": outcome(b)})
        elif isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate):
            if a.rotation_degrees == b.rotation_degrees:
                cosines.append(float(a.embedding @ b.embedding))
            else:  # one path turned the photo: their templates are of different images
                turned.append({"photo": str(n), "selfie": a.rotation_degrees, "ordinary": b.rotation_degrees})
    report: dict[str, object] = {
        "photos": len(blobs),
        "same_decision": len(blobs) - len(differ),
        "different_decisions": differ,
        "turned_differently": turned,
        "template_cosine_min": round(min(cosines), 4) if cosines else None,
        "template_cosine_median": round(statistics.median(cosines), 4) if cosines else None,
    }
    for name, t in timings.items():
        report[name] = {"wall": percentiles(t["wall"]), "thread_cpu": percentiles(t["cpu"])}
    return report


def engines(settings: Settings) -> tuple[FaceEngine, FaceEngine]:
    fast = build_engine(settings, threads=1)
    off = settings.with_overrides(decode=dataclasses.replace(settings.decode, selfie_long_side=0))
    return fast, build_engine(off, threads=1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--lfw", type=int, default=40, help="LFW photos in the sample (plus all of photos/)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = args.shared.resolve()
    if not (root / "lfw").is_dir():
        print(f"no photos at {root}", file=sys.stderr)
        return 2
    blobs = [upscaled_jpeg(p) for p in sample_photos(root, args.lfw)]  # in memory only
    fast, full = engines(Settings.load())
    for data in blobs[:3]:  # warm up both
        fast.process(data)
        full.process(data)
    report = {
        "load_average": os.getloadavg(),
        "megapixels": MEGAPIXELS,
        **compare(fast, full, blobs),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
