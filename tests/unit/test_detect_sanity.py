"""YuNet run on a sliver of an image (a 60000 x 48 JPEG reduced to one row at the working scale)
once answered a 'face' with a box of -6.7e16 px and score 1.0 (seen in a clean-clone run; the
values are whatever memory held, so not reproducible on demand). The detector now refuses such
inputs and drops detections that are not finite or lie outside the working image."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from face_dedup.vision.detect import _inside


def _row(x: float, y: float, w: float, h: float) -> NDArray[np.float64]:
    row = np.zeros(15, dtype=np.float64)
    row[:4] = (x, y, w, h)
    row[14] = 0.9
    return row


def test_the_garbage_seen_from_a_one_row_image_is_dropped() -> None:
    assert not _inside(_row(-6.6859705565184e16, -2.7069734977536e16, 0.0, 0.0), 320, 1)
    assert not _inside(_row(10, 10, 1e17, 1e17), 320, 240)


def test_non_finite_numbers_are_dropped() -> None:
    row = _row(10, 10, 50, 60)
    row[6] = np.nan
    assert not _inside(row, 320, 240)
    row[6] = np.inf
    assert not _inside(row, 320, 240)


def test_a_face_inside_or_cut_by_the_border_is_kept() -> None:
    assert _inside(_row(100, 80, 60, 70), 320, 240)
    assert _inside(_row(-20, -15, 60, 70), 320, 240)  # cut by the top-left corner
    assert _inside(_row(290, 200, 60, 70), 320, 240)  # cut by the bottom-right corner
    assert not _inside(_row(400, 80, 60, 70), 320, 240)  # wholly to the right
