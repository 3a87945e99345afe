"""Face quality measures on the aligned crop and the landmarks, each with a stable reason code.

Thresholds live in settings (`QualityThresholds`); the defaults were chosen on the shared
photo sets so that ordinary web and ID photos pass and clearly unusable ones do not (see
BENCHMARKS.md for the measured rejection rates).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import QualityIssue as QualityIssue  # re-exported
from face_dedup.errors import Reason


@dataclass(frozen=True)
class QualityThresholds:
    min_detection_score: float = 0.75  # LOW_CONFIDENCE below
    min_inter_eye_px: float = 12.0  # FACE_TOO_SMALL below (in the original photo's pixels)
    max_landmark_residual: float = 0.30  # IMPLAUSIBLE_LANDMARKS above (fraction of eye distance)
    max_roll_degrees: float = 40.0  # beyond this the photo is tried at 90/180/270 degrees
    # An upright face scoring below this is also compared with the photo's other orientations.
    upright_confident_score: float = 0.92
    max_yaw_ratio: float = 0.9  # EXTREME_POSE: nose offset from the eye midline / eye distance (profile)
    max_pitch_offset: float = 0.3  # EXTREME_POSE: nose height offset from frontal, / eye-mouth span
    min_sharpness: float = 12.0  # BLURRY below: variance of the Laplacian on the aligned crop
    min_brightness: float = 35.0  # TOO_DARK below: mean face luminance, 0..255
    max_brightness: float = 225.0  # TOO_BRIGHT above
    # Share of the face's pixels burnt out (>= 250) or crushed (<= 5). On LFW at most 8% / 15%.
    max_overexposed: float = 0.25  # TOO_BRIGHT above
    max_underexposed: float = 0.40  # TOO_DARK above
    # Another face at least this large (inter-eye distance relative to the subject's) and
    # confident means the photo does not show one person: MULTIPLE_FACES.
    rival_face_ratio: float = 0.6
    # ... and whose centre is less than this much (fraction of the image diagonal) further from
    # the image centre than the subject's. On LFW, bystanders sit >= 0.18 away, subjects <= 0.08.
    rival_center_margin: float = 0.08


# Template geometry (112x112 ArcFace template): used to express pose in a scale-free way.
_TEMPLATE_PITCH = (71.7366 - 51.5988) / (92.2848 - 51.5988)


def pose_measures(aligned_landmarks: NDArray[np.float64]) -> tuple[float, float]:
    """(yaw_ratio, pitch_offset) from landmarks already mapped into the template frame."""
    right_eye, left_eye, nose, mouth_r, mouth_l = aligned_landmarks
    eye_mid = (right_eye + left_eye) / 2
    mouth_mid = (mouth_r + mouth_l) / 2
    eye_distance = float(np.linalg.norm(left_eye - right_eye)) or 1.0
    yaw_ratio = float(nose[0] - eye_mid[0]) / eye_distance
    span = float(mouth_mid[1] - eye_mid[1]) or 1.0
    pitch_offset = float(nose[1] - eye_mid[1]) / span - _TEMPLATE_PITCH
    return yaw_ratio, pitch_offset


@dataclass(frozen=True)
class CropMeasures:
    sharpness: float
    brightness: float
    overexposed: float
    underexposed: float


def crop_measures(aligned_rgb: NDArray[np.uint8]) -> CropMeasures:
    """Sharpness and exposure of the inner face region of the aligned crop."""
    grey = cv2.cvtColor(aligned_rgb, cv2.COLOR_RGB2GRAY)
    inner = grey[28:104, 18:94]  # brows to chin, cheek to cheek in the 112x112 template
    return CropMeasures(
        sharpness=float(cv2.Laplacian(inner, cv2.CV_64F).var()),
        brightness=float(inner.mean()),
        overexposed=float((inner >= 250).mean()),
        underexposed=float((inner <= 5).mean()),
    )


def assess(
    thresholds: QualityThresholds,
    *,
    score: float,
    inter_eye_px: float,
    yaw_ratio: float,
    pitch_offset: float,
    crop: CropMeasures,
) -> list[QualityIssue]:
    """Every failed check, the most likely cause first (the first is the reported reason)."""
    t = thresholds
    issues: list[QualityIssue] = []
    # Exposure first: it is the most actionable cause, and an over- or under-exposed face also
    # lowers the detector's confidence and the measured sharpness.
    brightness, sharpness = crop.brightness, crop.sharpness
    if brightness < t.min_brightness:
        issues.append(
            QualityIssue(
                Reason.TOO_DARK,
                brightness,
                t.min_brightness,
                f"face brightness {brightness:.0f} is below {t.min_brightness}",
            )
        )
    elif crop.underexposed > t.max_underexposed:
        issues.append(
            QualityIssue(
                Reason.TOO_DARK,
                crop.underexposed,
                t.max_underexposed,
                f"{crop.underexposed:.0%} of the face is black",
            )
        )
    elif brightness > t.max_brightness:
        issues.append(
            QualityIssue(
                Reason.TOO_BRIGHT,
                brightness,
                t.max_brightness,
                f"face brightness {brightness:.0f} is above {t.max_brightness}",
            )
        )
    elif crop.overexposed > t.max_overexposed:
        issues.append(
            QualityIssue(
                Reason.TOO_BRIGHT,
                crop.overexposed,
                t.max_overexposed,
                f"{crop.overexposed:.0%} of the face is burnt out",
            )
        )
    if score < t.min_detection_score:
        issues.append(
            QualityIssue(
                Reason.LOW_CONFIDENCE,
                score,
                t.min_detection_score,
                f"detector confidence {score:.2f} is below {t.min_detection_score}",
            )
        )
    if inter_eye_px < t.min_inter_eye_px:
        issues.append(
            QualityIssue(
                Reason.FACE_TOO_SMALL,
                inter_eye_px,
                t.min_inter_eye_px,
                f"eyes are {inter_eye_px:.1f} px apart; at least {t.min_inter_eye_px} needed",
            )
        )
    if abs(yaw_ratio) > t.max_yaw_ratio:
        issues.append(
            QualityIssue(
                Reason.EXTREME_POSE,
                abs(yaw_ratio),
                t.max_yaw_ratio,
                f"head turned sideways (yaw ratio {yaw_ratio:+.2f})",
            )
        )
    elif abs(pitch_offset) > t.max_pitch_offset:
        issues.append(
            QualityIssue(
                Reason.EXTREME_POSE,
                abs(pitch_offset),
                t.max_pitch_offset,
                f"head tilted up or down (pitch offset {pitch_offset:+.2f})",
            )
        )
    # After exposure: a dark face has little contrast and would look blurry too.
    if sharpness < t.min_sharpness:
        issues.append(
            QualityIssue(
                Reason.BLURRY,
                sharpness,
                t.min_sharpness,
                f"face sharpness {sharpness:.1f} is below {t.min_sharpness}",
            )
        )
    return issues
