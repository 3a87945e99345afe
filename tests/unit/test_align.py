from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from face_dedup.models.registry import ARCFACE_112_TEMPLATE
from face_dedup.vision.align import fit_similarity

TEMPLATE = np.asarray(ARCFACE_112_TEMPLATE)


def transform(
    points: NDArray[np.float64], scale: float, degrees: float, shift: tuple[float, float]
) -> NDArray[np.float64]:
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.asarray((scale * (rotation @ points.T)).T + np.asarray(shift), dtype=np.float64)


def test_exact_template_fits_with_identity() -> None:
    fit = fit_similarity(TEMPLATE, TEMPLATE)
    assert np.allclose(fit.matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    assert fit.residual < 1e-9
    assert abs(fit.roll_degrees) < 1e-9


def test_recovers_scale_rotation_and_maps_back() -> None:
    face = transform(TEMPLATE, 2.5, 30.0, (300.0, 120.0))
    fit = fit_similarity(face, TEMPLATE)
    mapped = (fit.matrix[:, :2] @ face.T).T + fit.matrix[:, 2]
    assert np.allclose(mapped, TEMPLATE, atol=1e-6)
    assert math.isclose(fit.scale, 1 / 2.5, rel_tol=1e-6)
    # image y points down, so a positive mathematical angle is a clockwise roll on screen
    assert math.isclose(abs(fit.roll_degrees), 30.0, abs_tol=1e-6)


def test_upside_down_face_has_roll_near_180() -> None:
    fit = fit_similarity(transform(TEMPLATE, 1.0, 180.0, (200.0, 200.0)), TEMPLATE)
    assert abs(abs(fit.roll_degrees) - 180) < 1e-6


def test_mirrored_landmarks_do_not_fit_without_residual() -> None:
    mirrored = TEMPLATE.copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    mirrored[[0, 1]] = mirrored[[1, 0]]  # eyes swap too, as a detector would report them
    mirrored[[3, 4]] = mirrored[[4, 3]]
    assert fit_similarity(mirrored, TEMPLATE).residual < 0.05  # a mirror of a frontal face is frontal
    scrambled = TEMPLATE[[2, 0, 4, 1, 3]]
    assert fit_similarity(scrambled, TEMPLATE).residual > 0.3
