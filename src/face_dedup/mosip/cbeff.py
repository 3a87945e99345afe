"""CBEFF XML (ISO/IEC 19785-3, as MOSIP writes it): find the face record in a person's BIR.

The XML comes from outside: it is parsed with defusedxml, which refuses DTDs, entity
declarations and external references (no billion laughs, no XXE). Element names are matched
by their local name, so the ISO namespace, MOSIP's older files without it, and prefixes all
read the same. MOSIP encodes each BDB in base64url (usually without padding); plain base64 is
accepted too.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_CBEFF_BYTES = 20 << 20
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_QUALITY = re.compile(r"[0-9]{1,3}")  # a CBEFF quality score is 0-100


class CbeffError(ValueError):
    """Not a CBEFF document we can read (failure 16). Message safe to log."""


class CbeffEmpty(ValueError):
    """A well-formed CBEFF without face data (failure 11)."""


@dataclass(frozen=True)
class FaceBdb:
    record: bytes  # the ISO/IEC 19794-5 face record
    format_owner: str
    format_type: str
    purpose: str
    quality: int | None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].split(":")[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element | None, *path: str) -> str:
    for name in path:
        if element is None:
            return ""
        element = _child(element, name)
    return (element.text or "").strip() if element is not None else ""


def face_records(document: bytes) -> list[FaceBdb]:
    """Every face BDB in the document, in document order. Raises CbeffError for anything that
    is not a CBEFF BIR, CbeffEmpty when there is no face data in it."""
    if len(document) > MAX_CBEFF_BYTES:
        raise CbeffError(f"CBEFF document of {len(document)} bytes is too large")
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CbeffError(f"refused XML construct ({type(exc).__name__})") from None
    except (ET.ParseError, ValueError):
        raise CbeffError("not well-formed XML") from None
    if _local(root.tag) != "BIR":
        raise CbeffError("the document's root is not a BIR")
    faces = []
    for bir in root.iter():
        if _local(bir.tag) != "BIR" or _child(bir, "BDBInfo") is None:
            continue
        info = _child(bir, "BDBInfo")
        if _text(info, "Type").lower() != "face":
            continue
        encoded = "".join(_text(bir, "BDB").split())
        if not encoded:
            continue
        quality = _text(info, "Quality", "Score")
        faces.append(
            FaceBdb(
                record=_decode(encoded),
                format_owner=_text(info, "Format", "Organization"),
                format_type=_text(info, "Format", "Type"),
                purpose=_text(info, "Purpose"),
                # ASCII digits only: str.isdigit() also passes "²", which int() refuses (was failure 1)
                quality=int(quality) if _QUALITY.fullmatch(quality) else None,
            )
        )
    if not faces:
        raise CbeffEmpty("the CBEFF document has no face data")
    return faces


def _decode(encoded: str) -> bytes:
    if not _BASE64.fullmatch(encoded):
        raise CbeffError("a BDB is not base64")
    standard = encoded.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CbeffError("a BDB is not base64") from None


def build_cbeff(face_record: bytes, *, quality: int = 80) -> bytes:
    """A MOSIP-style CBEFF document with one face BIR (base64url BDB): test and conformance data."""
    bdb = base64.urlsafe_b64encode(face_record).decode().rstrip("=")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<BIR xmlns="http://standards.iso.org/iso-iec/19785/-3/ed-2/">'
        "<BIRInfo><Integrity>false</Integrity></BIRInfo>"
        "<BIR><Version><Major>1</Major><Minor>1</Minor></Version>"
        "<CBEFFVersion><Major>1</Major><Minor>1</Minor></CBEFFVersion>"
        "<BIRInfo><Integrity>false</Integrity></BIRInfo>"
        "<BDBInfo><Format><Organization>Mosip</Organization><Type>8</Type></Format>"
        "<CreationDate>2026-01-01T00:00:00.000Z</CreationDate><Type>Face</Type>"
        "<Level>Raw</Level><Purpose>Enroll</Purpose>"
        f"<Quality><Algorithm><Organization>HMAC</Organization><Type>SHA-256</Type></Algorithm>"
        f"<Score>{int(quality)}</Score></Quality></BDBInfo>"
        f"<BDB>{bdb}</BDB></BIR></BIR>"
    ).encode()
