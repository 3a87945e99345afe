"""Decode untrusted image bytes into an upright RGB array, or a typed rejection.

The format is read from the bytes, never from a file name. Size limits are checked on the
header before any pixel is decoded, so a decompression bomb costs nothing. Truncated files
are errors (Pillow's LOAD_TRUNCATED_IMAGES stays off).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from face_dedup.errors import InputRejected, Reason
from face_dedup.image_format import ACCEPTED as ACCEPTED  # re-exported: callers import them here too
from face_dedup.image_format import sniff_format as sniff_format


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 48
    # Large photos are reduced while decoding (JPEG DCT scaling) to about this long side;
    # detection works on at most ~1200 px anyway.
    working_long_side: int = 1600
    # Selfie path (FaceEngine): a large JPEG is first decoded at the strongest DCT reduction
    # (1/2, 1/4, 1/8) whose long side is still at least this, and the subject is detected on a
    # copy this large (a selfie's face is large); 0 turns it off.
    selfie_long_side: int = 320


@dataclass(frozen=True)
class DecodedImage:
    rgb: NDArray[np.uint8]  # H x W x 3, upright
    format: str  # JPEG | PNG | GIF | WEBP | HEIF | BMP | TIFF | JPEG2000
    original_size: tuple[int, int]  # width, height as stored, before EXIF rotation
    exif_rotated: bool
    scale: float  # working pixels per original pixel (1.0 unless reduced while decoding)
    notes: tuple[str, ...] = ()  # said in the report (e.g. "multi-page TIFF: the first of 3 pages")


@lru_cache(maxsize=1)
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def decode_image(
    data: bytes, limits: DecodeLimits | None = None, *, reduce_to: int | None = None
) -> DecodedImage:
    """`reduce_to`: decode a JPEG at the strongest DCT reduction (1/2, 1/4, 1/8) whose long
    side stays at least this many pixels (other formats and small JPEGs decode as usual). The
    size limits are checked on the header first either way: a reduced decode is no way around
    them."""
    limits = limits or DecodeLimits()
    if not data:
        raise InputRejected(Reason.EMPTY_FILE, "the file is empty", measured=0)
    if len(data) > limits.max_bytes:
        raise InputRejected(
            Reason.TOO_LARGE,
            f"the file has {len(data)} bytes; the limit is {limits.max_bytes}",
            measured=len(data),
            limit=limits.max_bytes,
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise InputRejected(
            Reason.UNSUPPORTED_FORMAT,
            f"not a {ACCEPTED} image (judged from its content, not its name)",
        )
    if fmt == "HEIF":
        _register_heif()

    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check fires in open(); turn its warning into our typed error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InputRejected(Reason.UNDECODABLE, f"the image declares a {width}x{height} size")
            if width * height > limits.max_pixels:
                raise InputRejected(
                    Reason.TOO_LARGE,
                    f"the image has {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
                    measured=width * height,
                    limit=limits.max_pixels,
                )
            if min(width, height) < limits.min_side:
                raise InputRejected(
                    Reason.TOO_SMALL,
                    f"the image is {width}x{height}; the shorter side must be at least {limits.min_side}",
                    measured=min(width, height),
                    limit=limits.min_side,
                )
            scale = 1.0
            notes: tuple[str, ...] = ()
            pages = int(getattr(image, "n_frames", 1) or 1)
            if fmt == "TIFF" and pages > 1:
                # A registry scan can hold several pages; the face photo is the first (reported).
                image.seek(0)
                notes = (f"multi-page TIFF: the first of its {pages} pages was used",)
            reduction = _dct_reduction(width, height, reduce_to, limits.min_side) if fmt == "JPEG" else 1
            if reduction > 1:
                # libjpeg scales in the DCT domain: 1/8 skips most of the inverse transform
                # and colour work (the entropy decoding remains).
                image.draft("RGB", (width // reduction, height // reduction))
                scale = image.size[0] / width
            elif reduce_to is None and fmt == "JPEG" and max(width, height) > 2 * limits.working_long_side:
                # DCT-domain reduction: decodes a 24 MP JPEG several times faster.
                image.draft("RGB", (limits.working_long_side, limits.working_long_side))
                scale = image.size[0] / width
            image.load()
            upright = ImageOps.exif_transpose(image)
            exif_rotated = upright.size != image.size or _orientation(image) not in (None, 1)
            rgb = _to_rgb(upright)
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(Reason.TOO_LARGE, f"the image is too large to decode safely: {exc}") from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        struct.error,
        MemoryError,
    ) as exc:
        raise InputRejected(Reason.UNDECODABLE, f"the {fmt} data is corrupt or truncated: {exc}") from None

    array = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputRejected(Reason.UNDECODABLE, f"decoded to an unexpected shape {array.shape}")
    return DecodedImage(array, fmt, (width, height), exif_rotated, scale, notes)


def _dct_reduction(width: int, height: int, reduce_to: int | None, min_side: int = 1) -> int:
    """The largest of 8, 4, 2 that keeps the long side >= reduce_to and the short side >=
    min_side (1: no reduction). Without the second rule a long thin strip (60000 x 48, within
    the limits) became 7500 x 6, which the detector's working copy rounds to no rows at all."""
    if reduce_to is None or reduce_to <= 0:
        return 1
    for factor in (8, 4, 2):
        if -(-max(width, height) // factor) >= reduce_to and -(-min(width, height) // factor) >= min_side:
            return factor
    return 1


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is not worth rejecting the photo for
        return None
    return int(value) if isinstance(value, int) else None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as on an ID photo background, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale: scale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) or 1.0
        grey = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")
