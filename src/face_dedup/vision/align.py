"""5-point similarity alignment to the embedder's template, with the fit's diagnostics.

The fit's rotation is the face's roll, and its residual says how far the five landmarks are
from any upright frontal face: both feed the orientation and pose checks, so a sideways or
upside-down face is never embedded as if it were upright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SimilarityFit:
    matrix: FloatArray  # 2x3, maps image points to template points
    scale: float
    roll_degrees: float  # rotation of the face in the image, 0 = upright
    residual: float  # RMS landmark error after the fit, as a fraction of the template eye distance


def fit_similarity(landmarks: FloatArray, template: FloatArray) -> SimilarityFit:
    """Least-squares similarity transform (Umeyama, without reflection) from landmarks to template."""
    src = np.asarray(landmarks, dtype=np.float64)
    dst = np.asarray(template, dtype=np.float64)
    if src.shape != dst.shape or src.shape[1] != 2:
        raise ValueError(f"landmarks {src.shape} do not match template {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    src_var = float((src_c**2).sum() / len(src))
    scale = float(np.trace(np.diag(singular) @ sign) / src_var) if src_var > 0 else 0.0
    translation = dst_mean - scale * rotation @ src_mean
    matrix = np.hstack([scale * rotation, translation[:, None]])
    mapped = (matrix[:, :2] @ src.T).T + matrix[:, 2]
    eye_distance = float(np.linalg.norm(dst[1] - dst[0])) or 1.0
    residual = float(np.sqrt(((mapped - dst) ** 2).sum(axis=1).mean())) / eye_distance
    # rotation maps image -> template; the face's roll in the image is the inverse angle.
    roll = -math.degrees(math.atan2(rotation[1, 0], rotation[0, 0]))
    return SimilarityFit(matrix, scale, roll, residual)


def warp_to_template(
    image: NDArray[np.uint8], fit: SimilarityFit, size: tuple[int, int]
) -> NDArray[np.uint8]:
    crop = cv2.warpAffine(image, fit.matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.ascontiguousarray(crop, dtype=np.uint8)
