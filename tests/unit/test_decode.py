from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_dedup.errors import InputRejected, Reason
from face_dedup.vision.decode import DecodeLimits, decode_image, sniff_format
from face_dedup.vision.pipeline import FaceEngine, FaceTemplate
from tests.conftest import encode


def gradient(width: int = 120, height: int = 80) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.dstack([x, y, 255 - x]))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries (almost) no pixels: what a bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def reason_of(data: bytes, limits: DecodeLimits | None = None) -> Reason:
    with pytest.raises(InputRejected) as caught:
        decode_image(data, limits)
    return caught.value.reason


@pytest.mark.parametrize(
    ("fmt", "expected"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"), ("WEBP", "WEBP")]
)
def test_formats_are_recognised_from_bytes_and_decoded(fmt: str, expected: str) -> None:
    data = encode(gradient(), fmt)
    assert sniff_format(data) == expected
    decoded = decode_image(data)
    assert decoded.format == expected
    assert decoded.rgb.shape == (80, 120, 3)
    assert decoded.rgb.dtype == np.uint8


def test_heic_is_decoded() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = encode(gradient(), "HEIF", quality=90)
    assert sniff_format(data) == "HEIF"
    decoded = decode_image(data)
    assert decoded.rgb.shape == (80, 120, 3)
    # lossy, but the picture is the same picture
    assert abs(float(decoded.rgb.mean()) - float(np.asarray(gradient()).mean())) < 5


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(gradient(120, 80), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data)
    assert decoded.rgb.shape == (120, 80, 3)
    assert decoded.exif_rotated


def test_transparent_png_gets_a_white_background() -> None:
    rgba = np.zeros((60, 60, 4), dtype=np.uint8)  # fully transparent black
    decoded = decode_image(encode(rgba))
    assert decoded.rgb.min() == 255


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 15).astype(np.uint16)
    image = Image.fromarray(grey)
    assert image.mode.startswith("I;16")
    decoded = decode_image(encode(image))
    assert decoded.rgb.max() == 255
    assert decoded.rgb.min() == 0


def test_large_jpeg_is_reduced_while_decoding() -> None:
    data = encode(gradient(4000, 3000), "JPEG")
    decoded = decode_image(data, DecodeLimits(working_long_side=1000))
    assert max(decoded.rgb.shape[:2]) < 4000
    assert decoded.scale < 1
    assert decoded.original_size == (4000, 3000)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.EMPTY_FILE),
        (b"just some text, named photo.jpg\n", Reason.UNSUPPORTED_FORMAT),
        (b"BM" + b"\0" * 100, Reason.UNSUPPORTED_FORMAT),  # BMP is not accepted
        (png_header_only(20000, 20000), Reason.TOO_LARGE),
        (png_header_only(10, 10), Reason.TOO_SMALL),
    ],
)
def test_bad_inputs_get_typed_reasons(data: bytes, reason: Reason) -> None:
    assert reason_of(data) == reason


def test_zero_size_dimensions_are_undecodable() -> None:
    assert reason_of(png_header_only(0, 100)) in (Reason.UNDECODABLE, Reason.TOO_SMALL)


def test_truncated_jpeg_is_undecodable() -> None:
    data = encode(gradient(), "JPEG")
    assert reason_of(data[: len(data) // 2]) == Reason.UNDECODABLE


def test_file_larger_than_byte_limit() -> None:
    data = encode(gradient(), "PNG")
    assert reason_of(data, DecodeLimits(max_bytes=len(data) - 1)) == Reason.TOO_LARGE


def test_bit_flips_never_escape_as_untyped_errors() -> None:
    original = encode(gradient(200, 160), "JPEG")
    rng = np.random.default_rng(7)
    outcomes = set()
    for _ in range(60):
        corrupt = bytearray(original)
        for position in rng.integers(2, len(corrupt), size=8):
            corrupt[position] ^= 1 << int(rng.integers(0, 8))
        try:
            decode_image(bytes(corrupt))
            outcomes.add("decoded")
        except InputRejected as exc:
            outcomes.add(exc.reason.value)
    assert outcomes <= {"decoded", "UNDECODABLE", "UNSUPPORTED_FORMAT", "TOO_SMALL", "TOO_LARGE"}


# -- registry formats: BMP, TIFF, JPEG 2000 ---------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("BMP", {}, "BMP"),
        ("TIFF", {}, "TIFF"),
        ("TIFF", {"compression": "tiff_deflate"}, "TIFF"),
        ("TIFF", {"compression": "jpeg"}, "TIFF"),
        ("JPEG2000", {}, "JPEG2000"),  # .jp2 file (boxes)
        ("JPEG2000", {"no_jp2": True}, "JPEG2000"),  # bare codestream (.j2k)
        ("JPEG2000", {"irreversible": True, "quality_mode": "rates", "quality_layers": [20]}, "JPEG2000"),
    ],
)
def test_registry_formats_are_recognised_from_bytes_and_decoded(
    fmt: str, params: dict[str, object], expected: str
) -> None:
    original = gradient()
    data = encode(original, fmt, **params)
    assert sniff_format(data) == expected
    decoded = decode_image(data)
    assert decoded.format == expected and decoded.rgb.shape == (80, 120, 3)
    error = np.abs(decoded.rgb.astype(int) - np.asarray(original, dtype=int)).mean()
    assert error < 6  # the same picture (lossy variants differ a little)


def test_a_multi_page_tiff_uses_the_first_page_and_says_so() -> None:
    first, second = gradient(), Image.new("RGB", (120, 80), (255, 0, 0))
    buffer = io.BytesIO()
    first.save(buffer, "TIFF", save_all=True, append_images=[second, second])
    decoded = decode_image(buffer.getvalue())
    assert decoded.notes == ("multi-page TIFF: the first of its 3 pages was used",)
    assert np.abs(decoded.rgb.astype(int) - np.asarray(first, dtype=int)).max() == 0


def test_text_starting_with_bm_or_ii_is_not_an_image() -> None:
    assert sniff_format(b"BM hello, this is a list of files\n") is None
    assert sniff_format(b"II is not a TIFF") is None


def _patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def test_registry_formats_declaring_huge_sizes_are_refused_before_decoding() -> None:
    limits = DecodeLimits(max_pixels=1_000_000)
    bmp = encode(gradient(), "BMP")
    assert reason_of(_patched(bmp, 18, "<ii", 50_000, 50_000), limits) is Reason.TOO_LARGE
    tiff = encode(Image.new("RGB", (2000, 1000)), "TIFF")  # 2 MP, no decoding needed to know
    assert reason_of(tiff, limits) is Reason.TOO_LARGE
    jp2 = encode(Image.new("RGB", (2000, 1000)), "JPEG2000")
    assert reason_of(jp2, limits) is Reason.TOO_LARGE


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "JPEG2000"])
def test_truncated_registry_formats_are_undecodable(fmt: str) -> None:
    data = encode(gradient(400, 300), fmt)
    assert reason_of(data[: len(data) // 2]) is Reason.UNDECODABLE


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "JPEG2000"])
def test_bit_flips_in_registry_formats_never_escape_as_untyped_errors(fmt: str) -> None:
    data = bytearray(encode(gradient(200, 160), fmt))
    rng = np.random.default_rng(8)
    for _ in range(60):
        damaged = bytearray(data)
        for position in rng.integers(0, len(damaged), 4):
            damaged[int(position)] ^= 0xFF
        with contextlib.suppress(InputRejected):  # anything else escaping fails the test
            decode_image(bytes(damaged))


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("fmt", "params"),
    [("BMP", {}), ("TIFF", {"compression": "tiff_lzw"}), ("JPEG2000", {}), ("JPEG2000", {"no_jp2": True})],
)
def test_a_face_in_a_registry_format_gives_the_template_of_the_original(
    engine: FaceEngine, faces_root: Path, fmt: str, params: dict[str, object]
) -> None:
    """The photo re-encoded by the test in each format: found, and the same person (the
    lossless ones give the very same pixels as the decoded JPEG, hence near-identical templates)."""
    original = (faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").read_bytes()
    reference = engine.process(original)
    assert isinstance(reference, FaceTemplate)
    converted = encode(Image.open(io.BytesIO(original)).convert("RGB"), fmt, **params)
    assert sniff_format(converted) == fmt
    template = engine.process(converted)
    assert isinstance(template, FaceTemplate), template
    assert template.image_format == fmt
    assert float(np.dot(template.embedding, reference.embedding)) > 0.99
