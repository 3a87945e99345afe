"""Measure the int8 SFace pack's activation ranges once, and write the committed table.

    python bench/int8_ranges.py [--shared ../shared/data/faces]
        [--out src/face_dedup/models/int8_ranges_sface.json]

The shared non-LFW photos (`photos/`) are detected and aligned with the fp32 pack; their
aligned crops go through the prepared fp32 graph (models/convert.py: prepare_for_int8, from the
installed fp32 file), and onnxruntime's calibrator records every activation's range (min/max,
or with --percentile the histogram's central share; the shipped table: --percentile 99.999).
LFW is not used, so it stays held out for the accuracy check
(`bench/accuracy.py --pack yunet-sface-int8-v1`). `face-dedup models install`
never runs this: it builds the int8 file from the table written here. Needs the `onnx` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from face_dedup.bootstrap import build_engine
from face_dedup.models.convert import (
    INT8_RANGES_TABLE,
    INT8_TOOLS,
    activation_ranges,
    load_ranges_table,
    prepare_for_int8,
)
from face_dedup.models.registry import YUNET_SFACE, verified_path
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=repo / "../shared/data/faces")
    parser.add_argument("--out", type=Path, default=repo / "src/face_dedup/models" / INT8_RANGES_TABLE)
    parser.add_argument(
        "--keep-fp32",
        nargs="*",
        default=None,
        help="nodes the quantizer leaves in fp32 (default: as the committed table says)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="clip each activation's range to this percentile of its histogram (default: min/max)",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = args.shared.resolve()
    settings = Settings.load(model_pack=YUNET_SFACE.id)
    engine = build_engine(settings, threads=1)
    photos = sorted(p for p in (root / "photos").glob("*/*/*") if p.is_file())
    crops = []
    for path in photos:
        result = engine.process(path.read_bytes())
        if isinstance(result, FaceTemplate):
            crops.append(np.ascontiguousarray(result.aligned_crop.transpose(2, 0, 1)[None], dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare_for_int8(verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder), prepared)
        ranges = activation_ranges(prepared, crops, args.percentile)
    table = {
        "what": "activation ranges of the prepared SFace graph (int8 pack's install-time quantization)",
        "command": "python bench/int8_ranges.py"
        + (f" --percentile {args.percentile}" if args.percentile is not None else ""),
        "method": "MinMax" if args.percentile is None else f"Percentile {args.percentile}",
        "source_sha256": YUNET_SFACE.embedder.sha256,
        "calibration_set": "shared photos/ (non-LFW), one aligned crop per photo with a face",
        "calibration_photos": len(photos),
        "calibration_crops": len(crops),
        "crops_sha256": hashlib.sha256(b"".join(c.tobytes() for c in crops)).hexdigest(),
        "tools": INT8_TOOLS,
        "keep_fp32": args.keep_fp32 if args.keep_fp32 is not None else load_ranges_table()[1],
        "ranges": ranges,
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"{len(ranges)} ranges from {len(crops)} crops -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
