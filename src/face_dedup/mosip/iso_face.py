"""ISO/IEC 19794-5 face image records: read the image out of one, and write one (for tests and
the conformance recipe's data).

Both editions MOSIP meets are read: 2011 (version "030", what MOSIP's devices and packets carry;
field sizes as in MOSIP's bio-utils) and 2005 (version "010"). Every length is checked against
the bytes actually present before it is used; the image must start with the signature its
declared type says (JPEG, JPEG 2000 or PNG). A JPEG 2000 image is converted losslessly to PNG for
the face engine, after checking its declared size against the decode limits (no decompression
bombs); one larger than the engine's working size is decoded at a reduced resolution level.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, Jpeg2KImagePlugin

from face_dedup.mosip.cbeff import CbeffError
from face_dedup.vision.decode import DecodeLimits

FORMAT_ID = b"FAC\x00"
V2011, V2005 = b"030\x00", b"010\x00"
JPEG, JP2_LOSSY, JP2_LOSSLESS, PNG = 0, 1, 2, 3
_JP2_SIGNATURES = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")
_SIGNATURES = {
    JPEG: (b"\xff\xd8\xff",),
    JP2_LOSSY: _JP2_SIGNATURES,
    JP2_LOSSLESS: _JP2_SIGNATURES,
    PNG: (b"\x89PNG\r\n\x1a\n",),
}


class FaceRecordError(CbeffError):
    """The bytes are not a usable ISO/IEC 19794-5 face record (message safe to log). A CbeffError:
    the record is the CBEFF's data block, and MOSIP's answer is the same (failure 16), so the ABIS
    handler catches it without importing this adapter."""


@dataclass(frozen=True)
class FaceImage:
    data: bytes  # JPEG or PNG, what the face engine reads
    image_type: int  # as declared in the record
    width: int
    height: int
    version: str  # "030" or "010"


class _Reader:
    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, start, len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise FaceRecordError("the face record is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])


def face_reader(limits: DecodeLimits | None = None) -> Callable[[bytes], bytes]:
    """The image (JPEG or PNG bytes) of a face record, for the ABIS handler: the composition root
    hands it in with its decode limits."""
    return lambda record: read_face_image(record, limits).data


def read_face_image(record: bytes, limits: DecodeLimits | None = None) -> FaceImage:
    """The first face image of the record, as JPEG or PNG bytes."""
    limits = limits or DecodeLimits()
    r = _Reader(record)
    if r.take(4) != FORMAT_ID:
        raise FaceRecordError("not an ISO/IEC 19794-5 face record (format identifier)")
    version = r.take(4)
    length = r.u32()
    if length != len(record):
        raise FaceRecordError(f"record length field says {length} bytes, the record has {len(record)}")
    if version == V2011:
        image_type, width, height, image = _read_2011(r)
    elif version == V2005:
        image_type, width, height, image = _read_2005(r)
    else:
        raise FaceRecordError("unsupported face record version (need 030 or 010)")
    if image_type not in _SIGNATURES:
        raise FaceRecordError(f"unsupported image data type {image_type}")
    if not image.startswith(_SIGNATURES[image_type]):
        raise FaceRecordError("the image data does not match its declared type")
    if image_type in (JP2_LOSSY, JP2_LOSSLESS):
        image = _jp2_to_png(image, limits)
    return FaceImage(image, image_type, width, height, version[:3].decode())


def _read_2011(r: _Reader) -> tuple[int, int, int, bytes]:
    if r.u16() < 1:  # number of representations
        raise FaceRecordError("the face record has no representation")
    r.take(1 + 2)  # certification flag, temporal semantics
    start = r.pos
    rep_length = r.u32()
    if rep_length < 4 or start + rep_length > r.end:
        raise FaceRecordError("representation length out of bounds")
    rep = _Reader(r.data, r.pos, start + rep_length)
    rep.take(9 + 1 + 2 + 2)  # capture date/time, device technology, vendor, type
    rep.take(5 * rep.u8())  # quality blocks
    landmarks = rep.u16()
    rep.take(15)  # rest of the facial information (17 bytes with the landmark count)
    rep.take(8 * landmarks)
    image_type_face, image_type = rep.u8(), rep.u8()
    del image_type_face
    width, height = rep.u16(), rep.u16()
    rep.take(1 + 2 + 1 + 1)  # spatial sampling, post-processing, cross reference, colour space
    size = rep.u32()
    image = rep.take(size)
    return image_type, width, height, image


def _read_2005(r: _Reader) -> tuple[int, int, int, bytes]:
    if r.u16() < 1:
        raise FaceRecordError("the face record has no facial image")
    start = r.pos
    block_length = r.u32()
    if block_length < 4 or start + block_length > r.end:
        raise FaceRecordError("facial record length out of bounds")
    rec = _Reader(r.data, r.pos, start + block_length)
    points = rec.u16()
    rec.take(14)  # gender .. pose uncertainty (20 bytes with the block length and point count)
    rec.take(8 * points)
    rec.u8()  # face image type
    image_type = rec.u8()
    width, height = rec.u16(), rec.u16()
    rec.take(1 + 1 + 2 + 2)  # colour space, source type, device type, quality
    image = rec.take(rec.end - rec.pos)
    return image_type, width, height, image


def _jp2_to_png(data: bytes, limits: DecodeLimits) -> bytes:
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG2000"]) as image:
            width, height = image.size  # from the header, nothing decoded yet
            if width * height > limits.max_pixels:
                raise FaceRecordError(f"JPEG 2000 image of {width}x{height} pixels is too large")
            # Decoded at a reduced resolution level when larger than the face engine works on
            # anyway (as JPEGs are, by DCT scaling): a 1 KB record declaring 6300x6300 pixels
            # took 6 s and 1.5 GB to decode whole, then was decoded again as a 40 MP PNG.
            # A codestream without enough resolution levels for that is refused (`load` fails).
            if isinstance(image, Jpeg2KImagePlugin.Jpeg2KImageFile):  # what formats= opened
                image.reduce = _reduction(max(width, height), limits.working_long_side)
            image.load()
            out = io.BytesIO()
            image.convert("RGB").save(out, "PNG")
    except FaceRecordError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FaceRecordError(f"undecodable JPEG 2000 image ({type(exc).__name__})") from None
    return out.getvalue()


def _reduction(long_side: int, target: int) -> int:
    """The JPEG 2000 resolution level (each halves the sides) that brings `long_side` to `target`
    or below."""
    level = 0
    while (long_side >> level) > target:
        level += 1
    return level


def write_face_record(image: bytes, image_type: int, width: int, height: int) -> bytes:
    """A minimal 2011 (version 030) record around one image: what MOSIP's capture devices send,
    less the optional blocks. Used to build test data and conformance CBEFF files."""
    info = struct.pack(">HBBBB3sH6s", 0, 0, 0, 0, 0, b"\x00\x00\x00", 0, b"\x00" * 6)
    image_info = struct.pack(">BBHHBHBB", 1, image_type, width, height, 0, 0, 0, 1)
    rep_body = b"\x00" * 9 + struct.pack(">BHHB", 0, 0, 0, 0) + info + image_info
    rep_body += struct.pack(">I", len(image)) + image
    rep = struct.pack(">I", 4 + len(rep_body)) + rep_body
    total = 17 + len(rep)
    return FORMAT_ID + V2011 + struct.pack(">IHBH", total, 1, 0, 0) + rep
