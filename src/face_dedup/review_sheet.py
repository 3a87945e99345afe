"""A case as one picture for an officer: the new photo and each candidate side by side, at the
same scale (aligned crops, and the full photos), with what each score means."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageOps

from face_dedup.blob_keys import crop_key, photo_key
from face_dedup.calibration import ImpostorTail
from face_dedup.domain import Case, Record
from face_dedup.errors import NotFound
from face_dedup.ports import BlobStore

TILE = 224  # both the crop and the photo are shown at this height
LABEL = 54

# The safe decoder of a stored photo (vision.decode's, handed in by the composition root through
# Registry.photo_rgb): header checked against the decode limits before any pixel is decoded.
PhotoDecoder = Callable[[bytes], NDArray[np.uint8]]


def _blob_image(blobs: BlobStore, key: str, *, photo: PhotoDecoder | None) -> Image.Image:
    try:
        data = blobs.get(key)
    except NotFound:
        return Image.new("RGB", (TILE, TILE), (200, 200, 200))
    if photo is not None:  # stored photos are the untrusted originals: decode them the safe way
        return Image.fromarray(photo(data))
    return Image.open(io.BytesIO(data)).convert("RGB")


def _column(
    blobs: BlobStore, decode: PhotoDecoder, record: Record | None, record_id: str, lines: list[str]
) -> Image.Image:
    tenant = record.tenant if record else ""
    crop = _blob_image(blobs, crop_key(tenant, record_id), photo=None).resize((TILE, TILE))
    photo = ImageOps.contain(_blob_image(blobs, photo_key(tenant, record_id), photo=decode), (TILE, TILE))
    column = Image.new("RGB", (2 * TILE + 8, TILE + LABEL), (255, 255, 255))
    column.paste(crop, (0, LABEL))
    column.paste(photo, (TILE + 8, LABEL))
    draw = ImageDraw.Draw(column)
    for number, text in enumerate(lines):
        draw.text((4, 4 + 16 * number), text, fill=(0, 0, 0))
    return column


def render_case_sheet(
    case: Case, records: dict[str, Record], blobs: BlobStore, tail: ImpostorTail, decode: PhotoDecoder
) -> bytes:
    probe = records.get(case.probe_record_id)
    columns = [
        _column(
            blobs,
            decode,
            probe,
            case.probe_record_id,
            [
                f"NEW  {probe.application_id if probe else '-'}",
                case.probe_record_id,
                f"case {case.case_id} ({case.kind.value})",
            ],
        )
    ]
    for rank, candidate in enumerate(case.candidates, start=1):
        record = records.get(candidate.record_id)
        fmr = tail.fmr_at(candidate.score)
        if fmr < tail.measured_min_fmr:  # past what the calibration measured: say only that
            meaning = (
                f"different people: fewer than 1 in {round(1 / tail.measured_min_fmr):,} score this high"
            )
        else:
            meaning = f"different people score this high ~1 in {max(1, round(1 / fmr)):,}"
        columns.append(
            _column(
                blobs,
                decode,
                record,
                candidate.record_id,
                [
                    f"#{rank}  {candidate.application_id or '-'}  score {candidate.score:.3f}",
                    candidate.record_id,
                    meaning,
                ],
            )
        )
    width = sum(c.width for c in columns) + 12 * (len(columns) - 1)
    sheet = Image.new("RGB", (width, TILE + LABEL), (235, 235, 235))
    x = 0
    for column in columns:
        sheet.paste(column, (x, 0))
        x += column.width + 12
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()
