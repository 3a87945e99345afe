"""Reduced-scale JPEG decoding (the selfie path's first step): DCT scaling to the requested
size, EXIF orientation still honoured, and the size limits still checked first."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from face_dedup.errors import InputRejected, Reason
from face_dedup.vision.decode import DecodeLimits, decode_image
from tests.conftest import encode
from tests.unit.test_decode import gradient, png_header_only


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    image = gradient(width, height)
    if orientation is None:
        return encode(image, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize(
    ("reduce_to", "factor"), [(320, 8), (500, 8), (501, 4), (1000, 4), (1001, 2), (2001, 1), (5000, 1)]
)
def test_the_strongest_reduction_that_keeps_the_long_side(reduce_to: int, factor: int) -> None:
    decoded = decode_image(jpeg(4000, 3000), reduce_to=reduce_to)
    assert decoded.rgb.shape[:2] == (-(-3000 // factor), -(-4000 // factor))
    assert decoded.scale == pytest.approx(1 / factor)
    assert max(decoded.rgb.shape[:2]) >= min(reduce_to, 4000)
    assert decoded.original_size == (4000, 3000)


def test_exif_orientation_is_honoured_at_reduced_scale() -> None:
    decoded = decode_image(jpeg(4000, 3000, orientation=6), reduce_to=320)  # 6: turn 90 clockwise
    assert decoded.rgb.shape[:2] == (500, 375)
    assert decoded.exif_rotated
    upright = decode_image(jpeg(4000, 3000, orientation=6))
    assert upright.rgb.shape[0] > upright.rgb.shape[1]


def test_other_formats_decode_at_full_size() -> None:
    decoded = decode_image(encode(gradient(1200, 900), "PNG"), reduce_to=100)
    assert decoded.rgb.shape[:2] == (900, 1200)
    assert decoded.scale == 1.0


@pytest.mark.parametrize(
    "data",
    [png_header_only(20000, 20000), None],
)
def test_size_limits_apply_before_any_reduced_decode(data: bytes | None) -> None:
    limits = DecodeLimits(max_pixels=10_000_000)
    payload = data if data is not None else jpeg(4000, 3000)  # 12 MP over a 10 MP limit
    with pytest.raises(InputRejected) as caught:
        decode_image(payload, limits if data is None else None, reduce_to=320)
    assert caught.value.reason is Reason.TOO_LARGE


@pytest.mark.parametrize(("width", "height", "shape"), [(60000, 48, (48, 60000)), (8000, 200, (50, 2000))])
def test_a_reduced_decode_keeps_the_short_side_within_the_limit(
    width: int, height: int, shape: tuple[int, int]
) -> None:
    """A long thin strip within the limits: reducing it by 8 left 6 rows (60000 x 48), which the
    detector's working copy rounded to none (an OpenCV assertion escaped the selfie path)."""
    data = encode(Image.new("RGB", (width, height), (90, 100, 110)), "JPEG")
    decoded = decode_image(data, reduce_to=320)
    assert decoded.rgb.shape[:2] == shape
    assert min(decoded.rgb.shape[:2]) >= DecodeLimits().min_side
