"""Hostile shapes through the selfie path (no shared photos needed): whatever the header
declares within the limits, the engine answers with a typed rejection, never an exception."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from face_dedup.vision.pipeline import FaceEngine, Rejection


def blank_jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (100, 110, 120)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("width", "height"), [(60000, 48), (48, 60000), (40000, 100), (20000, 60)])
def test_a_long_thin_jpeg_is_rejected_not_raised(engine: FaceEngine, width: int, height: int) -> None:
    """60000 x 48 is within every limit; the selfie path decoded it at 1/8 (7500 x 6) and the
    detector's 320 px working copy had no rows: cv2.error escaped process()."""
    assert engine._limits.selfie_long_side > 0
    result = engine.process(blank_jpeg(width, height))
    assert isinstance(result, Rejection)


def test_the_detector_takes_an_image_thinner_than_its_working_scale(engine: FaceEngine) -> None:
    rgb = np.full((6, 7500, 3), 100, dtype=np.uint8)
    assert engine._detector.detect(rgb, max_side=320) == []
