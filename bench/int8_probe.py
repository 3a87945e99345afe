"""Would an int8 SFace keep the default accuracy? A probe, not a shipped pack.

    python bench/int8_probe.py [--shared ../shared/data/faces] [--json out.json]

The fp32 embedder of the default pack is quantized statically (onnxruntime QDQ, per-channel
int8 weights, uint8 activations) into a temporary file, its activation ranges calibrated on
the aligned crops of the shared non-LFW photos (`photos/`), so LFW stays held out. Every LFW
development photo is detected and aligned once; both embedders (with the pack's mirror
averaging) embed the same crops, alternating, one thread each. Reported: 5-fold accuracy on
the 3,000 development pairs and the EER over all pairs for each, the template cosine between
them, and per-crop embedding time (thread CPU). Needs the `onnx` extra (models).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from face_dedup import calibration as cal
from face_dedup.bootstrap import build_engine
from face_dedup.models.registry import verified_path
from face_dedup.settings import Settings
from face_dedup.vision.embed import SFaceEmbedder, create_session
from face_dedup.vision.pipeline import FaceTemplate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cv2.setNumThreads(1)
    root = args.shared.resolve()
    settings = Settings.load()
    engine = build_engine(settings, threads=1)
    pack = engine.pack
    fp32_path = verified_path(settings.models_dir, pack, pack.embedder)

    def crops_of(paths: list[Path]) -> dict[str, NDArray[np.uint8]]:
        found = {}
        for path in paths:
            result = engine.process(path.read_bytes())
            if isinstance(result, FaceTemplate):
                found[path.relative_to(root).as_posix()] = result.aligned_crop
        return found

    calibration = list(crops_of(sorted(p for p in (root / "photos").glob("*/*/*") if p.is_file())).values())

    class Crops(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            crop = next(self._items, None)
            if crop is None:
                return None
            return {"data": np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        prepared, int8_path = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Crops(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        int8 = SFaceEmbedder(create_session(int8_path, threads=1), pack.contract)
        fp32 = SFaceEmbedder(create_session(fp32_path, threads=1), pack.contract)
        lfw = crops_of(sorted((root / "lfw").glob("*/*.jpg")))
        vectors: dict[str, dict[str, NDArray[np.float32]]] = {"fp32": {}, "int8": {}}
        cpu: dict[str, list[float]] = {"fp32": [], "int8": []}
        for n, (name, crop) in enumerate(lfw.items()):
            for label, embedder in [("fp32", fp32), ("int8", int8)][:: 1 if n % 2 else -1]:
                start = time.thread_time()
                vectors[label][name] = embedder.embed(crop)
                cpu[label].append(time.thread_time() - start)

    with (root / "lfw_pairs_dev.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    same = np.array([r["same"] == "1" for r in pairs])
    folds = [int(r["fold"]) for r in pairs]
    names = sorted(lfw)
    people = [n.split("/")[1] for n in names]
    report: dict[str, object] = {
        "load_average": os.getloadavg(),
        "calibration_crops": len(calibration),
        "lfw_crops": len(lfw),
    }
    for label, found in vectors.items():
        scores = np.array(
            [
                float(found[r["file1"]] @ found[r["file2"]])
                if r["file1"] in found and r["file2"] in found
                else -1.0
                for r in pairs
            ]
        )
        accuracy, std = cal.kfold_accuracy(scores, same, folds)
        genuine, impostor = cal.all_pairs_scores(np.stack([found[n] for n in names]), people)
        eer, _ = cal.equal_error_rate(genuine, impostor)
        report[label] = {
            "kfold_accuracy": round(accuracy, 5),
            "kfold_std": round(std, 4),
            "eer": round(eer, 5),
            "embed_thread_cpu_median_ms": round(statistics.median(cpu[label]) * 1000, 2),
        }
    cosines = [float(vectors["fp32"][n] @ vectors["int8"][n]) for n in names]
    report["template_cosine_min"] = round(min(cosines), 4)
    report["template_cosine_median"] = round(statistics.median(cosines), 4)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
