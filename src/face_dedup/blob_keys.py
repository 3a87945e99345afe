"""Where a record's files live in the blob store: one prefix per tenant and record, so that
erasing a record (or failing an input) deletes exactly its prefix. Keys carry ids only, never
a file name or anything personal. Used by the use cases, the review sheet and the API."""

from __future__ import annotations


def record_prefix(tenant: str, record_id: str) -> str:
    return f"{tenant}/{record_id}/"


def photo_key(tenant: str, record_id: str) -> str:
    return f"{record_prefix(tenant, record_id)}photo"


def crop_key(tenant: str, record_id: str) -> str:
    return f"{record_prefix(tenant, record_id)}aligned.png"


def template_prefix(tenant: str, record_id: str, number: int) -> str:
    """Files of a record's added template `number` (2 and up; template 1 is the enrollment
    photo at photo_key/crop_key). Inside the record's prefix: erased with the record."""
    return f"{record_prefix(tenant, record_id)}templates/{int(number)}/"


def template_photo_key(tenant: str, record_id: str, number: int) -> str:
    return f"{template_prefix(tenant, record_id, number)}photo"


def template_crop_key(tenant: str, record_id: str, number: int) -> str:
    return f"{template_prefix(tenant, record_id, number)}aligned.png"
