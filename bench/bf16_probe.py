"""Would the default pack's SFace in bfloat16 keep its accuracy? A probe, not a shipped pack.

    pip install openvino            # not a dependency of face-dedup: the probe's alone
    python bench/bf16_probe.py [--cache /tmp/int8-variants] [--shared ../shared/data/faces]

Why: on this machine's CPU (AVX-512 BF16) OpenVINO runs SFace in bf16 at about 9.5 ms per crop
against 16 ms for onnxruntime in fp32 (one thread), which would bring the default pack's
whole pipeline (face and mirror) under the 30 ms of issue 12 if accuracy holds. This embeds the
held-out LFW crops cached by bench/int8_variants.py (the default pack's alignment) with the
default pack's rule (face and mirror, each unit length, summed and normalised again) through
OpenVINO bf16, and scores them with that script's `metrics` (bench/accuracy.py's figures, each
set with its own impostor tail) beside the cached fp32 templates. Also prints the template
cosine to fp32 and per-crop time (process CPU, one inference thread, both precisions).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a sibling script: its crop cache, its metrics
import int8_variants
from face_dedup.models.registry import YUNET_SFACE, YUNET_SFACE_FLIP, verified_path
from face_dedup.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/int8-variants"))
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    args = parser.parse_args()
    try:
        import openvino
    except ImportError:
        print("bench/bf16_probe.py skipped: pip install openvino (the probe's own dependency)")
        return 0
    settings = Settings.load(model_pack=YUNET_SFACE_FLIP.id)
    root = args.shared.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    int8_variants.cache_crops(root, args.cache, settings)
    lfw = np.load(args.cache / "lfw.npz")
    names = [str(n) for n in lfw["names"]]
    with (root / "lfw_pairs_dev.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    model_path = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
    core = openvino.Core()

    def compiled(precision: str, threads: int) -> tuple[object, object]:
        model = core.compile_model(
            core.read_model(str(model_path)),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision},
        )
        return model.create_infer_request(), model.output(0)

    def unit(request: object, output: object, crop: np.ndarray) -> np.ndarray:
        blob = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)
        vector = np.asarray(request.infer({0: blob})[output], dtype=np.float32).reshape(-1)  # type: ignore[attr-defined]
        return vector / np.linalg.norm(vector)

    request, output = compiled("bf16", 2)
    started = time.perf_counter()
    rows = []
    for crop in lfw["crops"]:
        vector = unit(request, output, crop) + unit(request, output, np.ascontiguousarray(crop[:, ::-1]))
        rows.append(vector / np.linalg.norm(vector))
    matrix = np.stack(rows)
    cosine = np.sum(matrix * lfw["emb"], axis=1)
    fp32 = int8_variants.metrics(names, lfw["emb"], pairs, settings, None)
    bf16 = int8_variants.metrics(names, matrix, pairs, settings, None)
    timing = {}
    for precision in ("f32", "bf16"):
        one_request, one_output = compiled(precision, 1)
        spent = []
        for crop in lfw["crops"][::19][:200]:
            before = time.process_time()
            unit(one_request, one_output, crop)
            spent.append(time.process_time() - before)
        timing[precision] = round(1e3 * float(np.median(spent)), 2)
    print(
        json.dumps(
            {
                "crops": len(matrix),
                "seconds": round(time.perf_counter() - started),
                "cosine_to_fp32_min": round(float(cosine.min()), 5),
                "cosine_to_fp32_median": round(float(np.median(cosine)), 5),
                "fp32_own_tail": fp32,
                "bf16_own_tail": bf16,
                "difference": {key: round(bf16[key] - fp32[key], 3) for key in bf16},
                "ms_per_crop_one_thread_process_cpu": timing,
                "openvino": openvino.__version__ if hasattr(openvino, "__version__") else "",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
