"""What the engine port answers (`FaceAnalyzer.process`): a template or a typed rejection.

Plain values beside the ports (numpy arrays, no image or model library), so the use cases can
test and store them without loading cv2 or onnxruntime; `vision/` produces them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import Reason


@dataclass(frozen=True)
class QualityIssue:
    reason: Reason
    measured: float
    limit: float
    message: str


@dataclass(frozen=True)
class FaceTemplate:
    """What one photo yields: the embedding of its subject and how it was obtained.
    `measures` and `notes` carry no biometric data and may be logged and audited."""

    embedding: NDArray[np.float32]
    model_pack: str
    aligned_crop: NDArray[np.uint8]
    box: tuple[float, float, float, float]
    measures: dict[str, float]
    notes: tuple[str, ...]
    image_format: str
    faces_found: int
    rotation_degrees: int = 0


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    message: str
    measures: dict[str, float] = field(default_factory=dict)
    issues: tuple[QualityIssue, ...] = ()
