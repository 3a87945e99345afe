"""PNG encoding of an RGB array (the aligned crop officers review), kept out of the use cases:
they hand the engine's crop over and store bytes, and never touch an image library."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    import cv2  # here, not at the top: loading this module must not load OpenCV

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode the aligned crop")
    return bytes(encoded.tobytes())
