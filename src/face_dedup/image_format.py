"""Which image format outside bytes are, from their magic bytes alone (never a file name):
pure parsing, no image library, so the importer tells a photo from a manifest without loading
Pillow or OpenCV. `vision.decode` re-exports it and decodes only what it accepts."""

from __future__ import annotations

import struct

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
# BMP: "BM", then the DIB header's own size at offset 14 is one of the known header versions (a
# text file that happens to start with "BM" is not a bitmap).
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JP2 file's first box
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"  # a bare JPEG 2000 codestream: SOC then SIZ
ACCEPTED = "JPEG, PNG, GIF, WebP, HEIC/HEIF, BMP, TIFF or JPEG 2000"


def sniff_format(data: bytes) -> str | None:
    """The container format from magic bytes, or None for anything we do not accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(len(data), 64), 4)}
        if brands & _HEIF_BRANDS:
            return "HEIF"
    if data[:2] == b"BM" and len(data) >= 18 and struct.unpack("<I", data[14:18])[0] in _BMP_DIB_SIZES:
        return "BMP"
    if data[:4] in _TIFF_MAGIC:
        return "TIFF"
    if data.startswith(_JP2_SIGNATURE) or data.startswith(_J2K_CODESTREAM):
        return "JPEG2000"
    return None
