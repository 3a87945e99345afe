"""CBEFF XML (hostile input refused) and ISO/IEC 19794-5 face records (JPEG 2000 and JPEG)."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest
from PIL import Image

from face_dedup.mosip.cbeff import CbeffEmpty, CbeffError, build_cbeff, face_records
from face_dedup.mosip.iso_face import JP2_LOSSLESS, JPEG, FaceRecordError, read_face_image, write_face_record
from face_dedup.vision.decode import DecodeLimits


def picture(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, fmt, **({"irreversible": False} if fmt == "JPEG2000" else {}))
    return out.getvalue()


def test_jpeg2000_face_record_becomes_a_lossless_png() -> None:
    jp2 = picture("JPEG2000")
    face = read_face_image(write_face_record(jp2, JP2_LOSSLESS, 64, 48))
    assert face.version == "030" and (face.width, face.height) == (64, 48)
    assert face.data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(face.data)) as png, Image.open(io.BytesIO(jp2)) as original:
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(original.convert("RGB")))


def test_jpeg_face_record_passes_the_jpeg_through() -> None:
    jpeg = picture("JPEG")
    assert read_face_image(write_face_record(jpeg, JPEG, 64, 48)).data == jpeg


def test_2005_edition_reads_too() -> None:
    jpeg = picture("JPEG")
    facial = struct.pack(">H14s", 1, b"\x00" * 14) + b"\x00" * 8  # one feature point
    image_info = struct.pack(">BBHHBBHH", 1, JPEG, 64, 48, 1, 0, 0, 0)
    block = facial + image_info + jpeg
    body = struct.pack(">I", 4 + len(block)) + block
    record = b"FAC\x00010\x00" + struct.pack(">IH", 14 + len(body), 1) + body
    assert read_face_image(record).data == jpeg


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: b"FIR\x00" + r[4:],  # a finger record
        lambda r: r[:4] + b"020\x00" + r[8:],  # unknown version
        lambda r: r[:-10],  # truncated (record length no longer matches)
        lambda r: r[:8] + struct.pack(">I", len(r) - 10) + r[12:-10],  # truncated, length adjusted
        lambda r: r.replace(b"\xff\xd8\xff", b"\x00\x00\x00", 1),  # not the declared image type
    ],
)
def test_broken_records_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    record = write_face_record(picture("JPEG"), JPEG, 64, 48)
    with pytest.raises(FaceRecordError):
        read_face_image(mangle(record))


def test_a_jpeg2000_bomb_is_refused_from_its_header() -> None:
    record = write_face_record(picture("JPEG2000", (400, 300)), JP2_LOSSLESS, 400, 300)
    with pytest.raises(FaceRecordError, match="too large"):
        read_face_image(record, DecodeLimits(max_pixels=100_000))


def test_cbeff_round_trip_base64url_without_padding() -> None:
    record = write_face_record(picture("JPEG"), JPEG, 64, 48)
    document = build_cbeff(record, quality=77)
    assert b"=</BDB>" not in document
    (face,) = face_records(document)
    assert face.record == record and face.format_owner == "Mosip" and face.format_type == "8"
    assert face.quality == 77 and face.purpose == "Enroll"


def test_cbeff_without_namespace_and_with_other_modalities() -> None:
    record = write_face_record(picture("JPEG"), JPEG, 64, 48)
    bdb = base64.b64encode(record).decode()
    document = (
        "<BIR><BIR><BDBInfo><Type>Finger</Type></BDBInfo><BDB>RklSAA</BDB></BIR>"
        f"<BIR><BDBInfo><Type>Face</Type></BDBInfo><BDB>\n{bdb}\n</BDB></BIR></BIR>"
    ).encode()
    assert face_records(document)[0].record == record


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><BIR>&b;</BIR>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><BIR>&e;</BIR>',
        b"<BIR><BIR>",
        b"<Other/>",
        b"<BIR><BIR><BDBInfo><Type>Face</Type></BDBInfo><BDB>not*base64</BDB></BIR></BIR>",
    ],
)
def test_hostile_or_invalid_xml_is_invalid_cbeff(document: bytes) -> None:
    with pytest.raises(CbeffError):
        face_records(document)


def test_cbeff_without_face_data_is_empty() -> None:
    with pytest.raises(CbeffEmpty):
        face_records(b"<BIR><BIR><BDBInfo><Type>Face</Type></BDBInfo><BDB></BDB></BIR></BIR>")
    with pytest.raises(CbeffEmpty):
        face_records(b"<BIR><BIR><BDBInfo><Type>Iris</Type></BDBInfo><BDB>SUlS</BDB></BIR></BIR>")


@pytest.mark.parametrize("score", ["²", "٣", "9" * 5000, "-1", "80.5"])
def test_a_quality_score_that_is_not_a_small_ascii_number_is_no_score(score: str) -> None:
    """Not an internal error (failure 1): "²".isdigit() is true and int("²") raises."""
    document = build_cbeff(b"FAC\x00").replace(b"<Score>80</Score>", f"<Score>{score}</Score>".encode())
    assert face_records(document)[0].quality is None
    assert face_records(build_cbeff(b"FAC\x00", quality=80))[0].quality == 80


def test_a_large_jpeg2000_is_decoded_at_a_reduced_level_not_whole() -> None:
    """A few hundred bytes declaring 4000x3000 pixels: decoded at the engine's working size
    (a quarter of each side here), not whole, then again as a 12 MP PNG."""
    big = io.BytesIO()
    Image.new("L", (4000, 3000), 128).save(big, "JPEG2000", irreversible=False)
    face = read_face_image(write_face_record(big.getvalue(), JP2_LOSSLESS, 4000, 3000))
    with Image.open(io.BytesIO(face.data)) as png:
        assert png.size == (1000, 750)
    # a codestream without the resolution levels to reduce it is refused, not decoded whole
    flat = io.BytesIO()
    Image.new("L", (4000, 3000), 128).save(flat, "JPEG2000", irreversible=False, num_resolutions=1)
    with pytest.raises(FaceRecordError, match="undecodable"):
        read_face_image(write_face_record(flat.getvalue(), JP2_LOSSLESS, 4000, 3000))
