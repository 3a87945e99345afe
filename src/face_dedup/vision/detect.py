"""YuNet face detector (OpenCV's FaceDetectorYN): every face with its score and 5 landmarks."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import ModelError

# The smallest face YuNet finds is about 10 px across: a working copy thinner than that holds none.
MIN_WORKING_SIDE = 10


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x, y, width, height in the input image's pixels
    score: float
    # right eye, left eye (of the subject: image-left first), nose tip, mouth corners; 5x2
    landmarks: NDArray[np.float64]

    @property
    def inter_eye_px(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class DetectorConfig:
    # Candidates below this score are not faces at all; the quality gate applies its own,
    # higher, threshold to the subject face (LOW_CONFIDENCE).
    candidate_score: float = 0.5
    nms_threshold: float = 0.3
    top_k: int = 50
    # Detection runs on a copy whose long side is at most this (speed; YuNet finds faces of
    # ~30 px at 1080p, and registry photos have one large face).
    max_side: int = 960


class YuNetDetector:
    """One OpenCV detector per thread: FaceDetectorYN keeps per-call state and is not shared."""

    def __init__(self, model_path: Path, config: DetectorConfig | None = None) -> None:
        self._model_path = str(model_path)
        self._config = config or DetectorConfig()
        self._local = threading.local()
        self._create()  # fail at construction, not on the first photo

    def _create(self) -> cv2.FaceDetectorYN:
        try:
            detector = cv2.FaceDetectorYN.create(
                self._model_path,
                "",
                (320, 320),
                self._config.candidate_score,
                self._config.nms_threshold,
                self._config.top_k,
            )
        except cv2.error as exc:
            raise ModelError(f"OpenCV could not load the detector {self._model_path}: {exc}") from exc
        self._local.detector = detector
        return detector

    def detect(self, rgb: NDArray[np.uint8], max_side: int | None = None) -> list[DetectedFace]:
        """`max_side` overrides the configured working size (the selfie path's face crop)."""
        detector = getattr(self._local, "detector", None) or self._create()
        height, width = rgb.shape[:2]
        factor = min(1.0, (max_side or self._config.max_side) / max(height, width))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if factor < 1.0:
            bgr = cv2.resize(
                bgr,
                (max(1, round(width * factor)), max(1, round(height * factor))),
                interpolation=cv2.INTER_AREA,
            )
        if min(bgr.shape[:2]) < MIN_WORKING_SIDE:
            # No face fits, and YuNet run on a sliver of an image answers with garbage (boxes of
            # 1e16 px, score 1.0: its feature maps have no rows), so it is not run at all.
            return []
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, raw = detector.detect(bgr)
        if raw is None:
            return []
        faces = []
        for row in np.asarray(raw, dtype=np.float64):
            if not _inside(row, bgr.shape[1], bgr.shape[0]):
                continue  # not finite, or far outside the image: not a face the model saw
            x, y, w, h = (row[:4] / factor).tolist()
            landmarks = row[4:14].reshape(5, 2) / factor
            faces.append(DetectedFace((x, y, w, h), float(row[14]), landmarks))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces


def _inside(row: NDArray[np.float64], width: int, height: int) -> bool:
    """A detection whose numbers are finite and whose box overlaps the working image (a face cut
    by the border is kept: its box may stick out, but never by more than the image's size)."""
    if not np.all(np.isfinite(row[:15])):
        return False
    x, y, w, h = (float(v) for v in row[:4])
    return bool(
        w > 0
        and h > 0
        and x < width
        and y < height
        and x + w > 0
        and y + h > 0
        and w < 2 * max(width, height)
    )
