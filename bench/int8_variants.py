"""Int8 SFace build variants measured on held-out LFW against the default pack (issue 12).

    python bench/int8_variants.py [--cache /tmp/int8-variants] [--shared ../shared/data/faces] [--speed]
        [VARIANT ...]      # default: every variant below

Each variant is the shipped build (models/convert.py: the prepared fp32 graph, per-channel int8
weights, uint8 activations, the committed 99.999th-percentile ranges) with one thing changed:
nodes left in fp32, symmetric int8 activations, or ranges measured on the non-LFW crops and
their mirror images. The aligned crops come from the default pack's detector and alignment
(the same for both packs), cached in --cache once (LFW and the shared non-LFW `photos/`), so a
variant costs only its embeddings: face and mirror, two threads. Printed per variant: 5-fold
accuracy, EER, TAR at FAR 1e-2..1e-5 on all pairs, the 1:N de-dup (each variant with its own
measured tail, as its calibration file would be), minus the default's (its shipped tail), and
the template cosine to the default. Results are appended to --cache/results.jsonl. Needs the
`onnx` extra; writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from face_dedup import calibration as cal
from face_dedup.bootstrap import build_engine, load_tail
from face_dedup.decision import DecisionPolicy
from face_dedup.models.convert import activation_ranges, load_ranges_table, prepare_for_int8
from face_dedup.models.registry import YUNET_SFACE, YUNET_SFACE_FLIP, YUNET_SFACE_INT8, verified_path
from face_dedup.settings import Settings
from face_dedup.vision.embed import SFaceEmbedder, create_session
from face_dedup.vision.pipeline import FaceTemplate

DEPTHWISE = [f"conv_{i}_dw_conv2d" for i in range(2, 15)]
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "keep_conv1": {"keep": ["conv_1_conv2d"]},
    "keep_conv1_dw": {"keep": ["conv_1_conv2d", *DEPTHWISE]},
    "keep_early": {"keep": ["conv_1_conv2d", "conv_2_dw_conv2d", "conv_2_conv2d", "conv_3_dw_conv2d"]},
    "keep_conv1_dw_head": {"keep": ["conv_1_conv2d", *DEPTHWISE, "pre_fc1", "bn1", "fc1"]},
    "keep_conv1_dw_pw23": {"keep": ["conv_1_conv2d", *DEPTHWISE, "conv_2_conv2d", "conv_3_conv2d"]},
    "symmetric_conv1": {"keep": ["conv_1_conv2d"], "symmetric": True},
    "mirror_ranges_conv1": {"keep": ["conv_1_conv2d"], "mirror_ranges": True},
    # Not int8: the default fp32 model on crops changed by -1/0/+1 grey level at random (seed 1),
    # how far these figures move under a change nobody would call a loss.
    "fp32_noise_floor": {"fp32_noise": True},
}
METRICS = ["acc", "eer", "1e-02", "1e-03", "1e-04", "1e-05", "recall", "false_alarms"]


def cache_crops(root: Path, cache: Path, settings: Settings) -> None:
    """Aligned crops and default-pack templates of LFW and `photos/`, once; the templates from
    onnxruntime fp32 by name (the reference the variants are compared with; `auto` may be bf16)."""
    engine = build_engine(
        settings.with_overrides(embedder_runtime="onnxruntime"), YUNET_SFACE_FLIP, threads=1
    )
    for tag, pattern in (("photos", "photos/*/*/*"), ("lfw", "lfw/*/*.jpg")):
        if (cache / f"{tag}.npz").exists():
            continue
        files = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda f: engine.process((root / f).read_bytes()), files))
        kept = [(f, r) for f, r in zip(files, results, strict=True) if isinstance(r, FaceTemplate)]
        np.savez(
            cache / f"{tag}.npz",
            names=np.array([f for f, _ in kept]),
            crops=np.stack([r.aligned_crop for _, r in kept]),
            emb=np.stack([r.embedding for _, r in kept]),
        )


def build(
    prepared: Path, out: Path, ranges: dict[str, list[float]], keep: list[str], symmetric: bool
) -> None:
    """The install's quantizer call (convert.quantize_folded_int8) with the variant's changes."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, update_opset_version
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    model = update_opset_version(load_model_with_shape_infer(prepared), QuantType.QInt8)
    data = TensorsData(
        CalibrationMethod.MinMax, {n: (np.float32(lo), np.float32(hi)) for n, (lo, hi) in ranges.items()}
    )
    quantizer = QDQQuantizer(
        model,
        True,
        False,
        QuantType.QInt8,
        QuantType.QInt8 if symmetric else QuantType.QUInt8,
        data,
        [],
        keep,
        sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
        {"ActivationSymmetric": True} if symmetric else {},
    )
    logging.getLogger().setLevel(logging.ERROR)
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out))


def metrics(
    names: list[str], matrix: np.ndarray, pairs: list[dict[str, str]], settings: Settings, tail: Any
) -> dict[str, float]:
    """bench/accuracy.py's figures on cached templates."""
    emb = dict(zip(names, matrix, strict=True))
    scores = np.array(
        [
            float(emb[r["file1"]] @ emb[r["file2"]]) if r["file1"] in emb and r["file2"] in emb else -1.0
            for r in pairs
        ]
    )
    same = np.array([r["same"] == "1" for r in pairs])
    acc, _ = cal.kfold_accuracy(scores, same, [int(r["fold"]) for r in pairs])
    people = [n.split("/")[1] for n in names]
    genuine, impostor = cal.all_pairs_scores(matrix, people)
    eer, _ = cal.equal_error_rate(genuine, impostor)
    if tail is None:  # a variant: its own tail, as its calibration file would be written
        tail = cal.impostor_tail_from_scores(impostor, YUNET_SFACE_INT8.id, "variant")
    dedup = cal.simulate_dedup(
        matrix, people, lambda n: DecisionPolicy.from_settings(settings, tail).thresholds(n).review
    )
    out = {"acc": acc, "eer": eer, "recall": dedup.recall, "false_alarms": dedup.false_alarm_rate}
    out |= {f"{far:.0e}": cal.tar_at_far(genuine, impostor, far)[0] for far in (1e-2, 1e-3, 1e-4, 1e-5)}
    return {k: round(100 * v, 3) for k, v in out.items()}


def embedder_speed(cache: Path, settings: Settings, variants: list[str]) -> None:
    """Thread CPU of the embedder alone (face + mirror), one thread, models alternating per crop:
    fp32 default, the installed int8 pack, and the variants already built in `cache`."""
    models = {
        "fp32": (
            verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder),
            YUNET_SFACE_FLIP.contract,
        ),
        "int8 installed": (
            verified_path(settings.models_dir, YUNET_SFACE_INT8, YUNET_SFACE_INT8.embedder),
            YUNET_SFACE_INT8.contract,
        ),
    }
    models |= {name: (cache / f"{name}.onnx", YUNET_SFACE_INT8.contract) for name in variants}
    embedders = {
        name: SFaceEmbedder(create_session(path, threads=1), c) for name, (path, c) in models.items()
    }
    crops = np.load(cache / "lfw.npz")["crops"][::19][:200]
    times: dict[str, list[float]] = {name: [] for name in embedders}
    order = list(embedders)
    for n, crop in enumerate(crops):
        for name in order if n % 2 == 0 else order[::-1]:
            started = time.thread_time()
            embedders[name].embed(crop)
            if n >= 5:  # the first calls warm up
                times[name].append(time.thread_time() - started)
    print("load average", os.getloadavg())
    for name, values in times.items():
        values.sort()
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"{name}: median {1000 * statistics.median(values):.2f} ms, p95 {1000 * p95:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/int8-variants"))
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--speed", action="store_true", help="time the built variants' embedders instead")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {sorted(VARIANTS)}")
    cv2.setNumThreads(1)
    root = args.shared.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    settings = Settings.load(model_pack=YUNET_SFACE_FLIP.id)
    if args.speed:
        embedder_speed(args.cache, settings, [v for v in args.variants if not VARIANTS[v].get("fp32_noise")])
        return 0
    cache_crops(root, args.cache, settings)
    lfw = np.load(args.cache / "lfw.npz")
    names = [str(n) for n in lfw["names"]]
    with (root / "lfw_pairs_dev.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    default = metrics(names, lfw["emb"], pairs, settings, load_tail(settings, YUNET_SFACE_FLIP))
    print("default", json.dumps(default), flush=True)
    prepared = args.cache / "prepared.onnx"
    if not prepared.exists():
        prepare_for_int8(verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder), prepared)
    table, _ = load_ranges_table()
    for name in args.variants:
        spec = VARIANTS[name]
        started = time.perf_counter()
        ranges = table
        if spec.get("mirror_ranges"):
            crops = np.load(args.cache / "photos.npz")["crops"]
            batches = [np.ascontiguousarray(c.transpose(2, 0, 1)[None], dtype=np.float32) for c in crops]
            batches += [np.ascontiguousarray(b[:, :, :, ::-1]) for b in batches]
            ranges = activation_ranges(prepared, batches, 99.999)
        crops = lfw["crops"]
        if spec.get("fp32_noise"):
            model = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
            noise = np.random.default_rng(1).integers(-1, 2, crops.shape)
            crops = np.clip(crops.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        else:
            model = args.cache / f"{name}.onnx"
            build(prepared, model, ranges, list(spec.get("keep", [])), bool(spec.get("symmetric")))
        contract = YUNET_SFACE_FLIP.contract if spec.get("fp32_noise") else YUNET_SFACE_INT8.contract
        embedder = SFaceEmbedder(create_session(model, threads=2), contract)
        matrix = np.stack([embedder.embed(c) for c in crops])
        cosine = np.sum(matrix * lfw["emb"], axis=1)
        found = metrics(names, matrix, pairs, settings, None)
        row = {
            "variant": name,
            **found,
            "difference": {k: round(found[k] - default[k], 3) for k in METRICS},
            "cosine_min": round(float(cosine.min()), 4),
            "cosine_median": round(float(np.median(cosine)), 4),
            "seconds": round(time.perf_counter() - started),
        }
        print(json.dumps(row), flush=True)
        with (args.cache / "results.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
