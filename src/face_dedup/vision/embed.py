"""SFace embedder on onnxruntime: an aligned 112x112 crop in, an L2-normalised vector out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from face_dedup.errors import ModelError
from face_dedup.models.registry import EmbedderContract
from face_dedup.vision.runtimes import EmbedderRuntime, OnnxRuntimeRunner


def create_session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    """One session per process (per Lambda cold start); `threads` caps onnxruntime's pool so
    parallel workers do not oversubscribe the cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ModelError(f"onnxruntime could not load {model_path}: {exc}") from exc


class SFaceEmbedder:
    """A contract with `flip_average` averages the embeddings of the crop and its mirror image:
    measured on the LFW dev folds it removes some errors (BENCHMARKS.md) at twice the cost.
    A model whose batch dimension is dynamic gets both as one batch of 2 (one call, the same
    vectors as two calls: tests/integration/test_embed_batch.py); a model written for batch 1
    (the fp32 file) gets two calls."""

    def __init__(self, session: ort.InferenceSession | EmbedderRuntime, contract: EmbedderContract) -> None:
        runtime = OnnxRuntimeRunner(session) if isinstance(session, ort.InferenceSession) else session
        width, height = contract.input_size
        if list(runtime.input_shape)[1:] != [3, height, width]:
            raise ModelError(
                f"embedder input {list(runtime.input_shape)} does not match "
                f"the pack's contract 3x{height}x{width}"
            )
        if list(runtime.output_shape)[-1] != contract.embedding_dim:
            raise ModelError(
                f"embedder output {list(runtime.output_shape)} is not "
                f"{contract.embedding_dim}-d as the pack's contract says"
            )
        self._runtime = runtime
        self._contract = contract
        self._flip = contract.flip_average
        batch = runtime.input_shape[0]
        # Dynamic (onnxruntime with a batch-dynamic file), or compiled for exactly face + mirror.
        self._batched = not isinstance(batch, int) or (self._flip and batch == 2)
        if isinstance(batch, int) and batch != 1 and not self._batched:
            raise ModelError(f"an embedder compiled for batches of {batch} cannot embed one crop at a time")

    @property
    def dim(self) -> int:
        return self._contract.embedding_dim

    @property
    def runtime(self) -> str:
        """Which runtime computes the embeddings (vision/runtimes.py)."""
        return self._runtime.name

    @property
    def batched(self) -> bool:
        """Whether a face and its mirror go through the model as one batch."""
        return self._batched

    def embed(self, aligned_rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        width, height = self._contract.input_size
        if aligned_rgb.shape != (height, width, 3):
            raise ValueError(f"aligned crop must be {height}x{width}x3, got {aligned_rgb.shape}")
        if not self._flip:
            single: NDArray[np.float32] = self._run(aligned_rgb[None])[0]
            return single
        if self._batched:
            pair = self._run(np.stack([aligned_rgb, aligned_rgb[:, ::-1]]))
        else:
            pair = np.concatenate([self._run(aligned_rgb[None]), self._run(aligned_rgb[None, :, ::-1])])
        vector = pair[0] + pair[1]
        return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)

    def _run(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """N aligned crops (NHWC) in, N unit vectors out."""
        pixels = crops if self._contract.channel_order == "RGB" else crops[..., ::-1]
        # NCHW; SFace normalises internally (raw 0..255), other packs say their mean and std.
        blob = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        if self._contract.pixel_mean != 0.0 or self._contract.pixel_std != 1.0:
            blob = (blob - np.float32(self._contract.pixel_mean)) / np.float32(self._contract.pixel_std)
        vectors = self._runtime.run(blob).reshape(len(crops), -1)
        # Row by row, as one vector was normalised before batching: the same bits.
        for row in vectors:
            norm = float(np.linalg.norm(row))
            if not np.isfinite(norm) or norm == 0.0:
                raise ModelError("the embedder returned a zero or non-finite vector")
            row /= norm
        return vectors
