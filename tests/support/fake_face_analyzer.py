"""FakeFaceAnalyzer: the engine port answered from a table the test writes, so that business
rules (decision bands, the two-person rule, tenant isolation, erasure, idempotency, the
concurrency re-check) are tested without model files or labelled photos. Everything else the
service touches is the real embedded adapter (SQLite store and index, files, outbox)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.errors import Reason
from face_dedup.models.registry import ModelPack
from face_dedup.ports import FaceAnalyzer
from face_dedup.vision.png import encode_png


class FakeFaceAnalyzer(FaceAnalyzer):
    """Photo bytes -> the template (a unit vector) or the rejection the test chose for them.
    Bytes the test never named are rejected as undecodable, as a real engine would."""

    def __init__(self, pack: ModelPack) -> None:
        self.pack = pack
        self._answers: dict[bytes, NDArray[np.float32] | Rejection] = {}
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.pack.contract.embedding_dim

    def face(self, photo: bytes, vector: NDArray[np.floating]) -> bytes:
        """`photo` shows a face whose template is `vector` (normalised here)."""
        v = np.asarray(vector, dtype=np.float64)
        self._answers[photo] = (v / np.linalg.norm(v)).astype(np.float32)
        return photo

    def reject(self, photo: bytes, reason: Reason, message: str) -> bytes:
        self._answers[photo] = Rejection(reason, message)
        return photo

    def crop_png(self, crop: NDArray[np.uint8]) -> bytes:
        return encode_png(crop)  # the real encoder: tests decode the crops they store

    def process(self, data: bytes) -> FaceTemplate | Rejection:
        self.calls += 1
        answer = self._answers.get(data)
        if answer is None:
            return Rejection(Reason.UNDECODABLE, "not a photo this fake knows")
        if isinstance(answer, Rejection):
            return answer
        return FaceTemplate(
            embedding=answer.copy(),
            model_pack=self.pack.id,
            aligned_crop=np.zeros((112, 112, 3), dtype=np.uint8),
            box=(10.0, 10.0, 100.0, 100.0),
            measures={"face_px": 100.0},
            notes=(),
            image_format="png",
            faces_found=1,
        )


def unit(dim: int, axis: int) -> NDArray[np.float64]:
    v = np.zeros(dim)
    v[axis] = 1.0
    return v


def at_score(base: NDArray[np.floating], score: float, orthogonal_axis: int) -> NDArray[np.float64]:
    """A unit vector whose cosine with the unit vector `base` is exactly `score` (it leans
    towards the axis `orthogonal_axis`, which `base` must not use)."""
    b = np.asarray(base, dtype=np.float64)
    b = b / np.linalg.norm(b)
    other = np.zeros_like(b)
    other[orthogonal_axis] = 1.0
    assert abs(float(b @ other)) < 1e-9
    return np.asarray(score * b + np.sqrt(1.0 - score**2) * other, dtype=np.float64)
