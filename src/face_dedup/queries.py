"""Reads: what a caller may see of one tenant's registry (cases, records, import outcomes, the
audit log, face images). The CLI, the review API and the capture page read through here and
never through the store or the blob store themselves, so the two rules of every read are
written once:

- tenant isolation (`TenantReader._own`): another tenant's case, record or image does not
  exist for this reader (NotFound / None, never "forbidden": that would confirm it exists);
- roles (`TenantReader._allow`, with READ_ROLES): who may read what.

A reader is built per caller (`RegistryQueries.reader`); the tenant is explicit, not a setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Protocol, TypeVar

from face_dedup import identifiers
from face_dedup.domain import Actor, AuditEvent, Case, ImportItem, Record, Role
from face_dedup.errors import NotFound, PermissionDenied
from face_dedup.ports import BlobStore, RecordStore


class Read(StrEnum):
    CASES = "cases"  # cases, their probe and candidate records, import outcomes
    IMAGES = "images"  # a record's photo and aligned crop
    AUDIT = "audit"  # the audit log
    APPLICANT = "applicant"  # one application's own outcome (the capture page's grant holder)


# Who may read what. Auditors read everything and decide nothing; administrators operate the
# registry (the audit log) but see no faces and no cases.
READ_ROLES: dict[Read, tuple[Role, ...]] = {
    Read.CASES: (Role.OFFICER, Role.SUPERVISOR, Role.AUDITOR),
    Read.IMAGES: (Role.OFFICER, Role.SUPERVISOR, Role.AUDITOR),
    Read.AUDIT: (Role.AUDITOR, Role.ADMIN),
    Read.APPLICANT: (),  # no staff role: only an applicant's grant or the operator
}

PAGE = 500  # cases per store call when every case of a status is read


class _Owned(Protocol):
    @property
    def tenant(self) -> str: ...


Owned = TypeVar("Owned", bound=_Owned)


class Reader(StrEnum):
    """Who reads, besides a staff member with a role."""

    OPERATOR = "operator"  # the machine's operator at the CLI: holds the data directory anyway
    APPLICANT = "applicant"  # the holder of a capture link: their own application's outcome only


class RegistryQueries:
    """Built once by the composition root over the store and blob store."""

    def __init__(self, store: RecordStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs

    def reader(self, who: Actor | Reader, tenant: str) -> TenantReader:
        """Reads of `tenant` by `who`: a staff member (checked against READ_ROLES on each kind
        of read), the local operator, or an applicant."""
        return TenantReader(self._store, self._blobs, who, identifiers.tenant(tenant))

    def presigns_images(self) -> str | None:
        """A sample presigned link (a dummy key; signing is local, nothing is read), to learn
        where image links point (the console's CSP); None where images are served here."""
        return self._blobs.presigned_url("csp-probe", 1)


class TenantReader:
    def __init__(self, store: RecordStore, blobs: BlobStore, who: Actor | Reader, tenant: str) -> None:
        self._store = store
        self._blobs = blobs
        self._who = who
        self.tenant = tenant

    # -- the two rules -------------------------------------------------------------------------

    def _allow(self, what: Read) -> None:
        """The one role check of every read."""
        if self._who is Reader.OPERATOR:
            return
        if self._who is Reader.APPLICANT:
            if what is Read.APPLICANT:
                return
            raise PermissionDenied(f"an applicant's link reads nothing but its own outcome ({what.value})")
        role = self._who.role
        if role not in READ_ROLES[what]:
            allowed = " or ".join(r.value for r in READ_ROLES[what]) or "no staff role"
            raise PermissionDenied(f"{self._who.name} is {role.value}: only {allowed} may read {what.value}")

    def _own(self, found: Owned | None) -> Owned | None:
        """The one tenant check of every read by id: another tenant's item is not there."""
        return found if found is not None and found.tenant == self.tenant else None

    # -- cases ---------------------------------------------------------------------------------

    def cases(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[Case]:
        self._allow(Read.CASES)
        return self._store.list_cases(tenant=self.tenant, status=status, limit=limit, offset=offset)

    def all_cases(self, status: str | None = None) -> list[Case]:
        """Every case of the tenant in that status, page by page from the store."""
        self._allow(Read.CASES)
        return list(self._pages(status))

    def _pages(self, status: str | None) -> Iterator[Case]:
        offset = 0
        while True:
            chunk = self._store.list_cases(tenant=self.tenant, status=status, limit=PAGE, offset=offset)
            yield from chunk
            offset += len(chunk)
            if len(chunk) < PAGE:
                return

    def case(self, case_id: str) -> Case:
        """The case, or NotFound (also for another tenant's id)."""
        self._allow(Read.CASES)
        case = self._own(self._store.get_case(case_id))
        if case is None:
            raise NotFound(f"no case {case_id[:80]}")
        return case

    def record(self, record_id: str) -> Record | None:
        """A case's probe or candidate; None when erased (or never this tenant's)."""
        self._allow(Read.CASES)
        return self._own(self._store.get_record(record_id))

    def records(self, record_ids: Iterable[str]) -> dict[str, Record]:
        """Several cases' records in one store call (reports over every case); erased ones and
        another tenant's are left out."""
        self._allow(Read.CASES)
        found = self._store.describe_records(record_ids)
        return {key: record for key, record in found.items() if self._own(record) is not None}

    # -- an application's own view -------------------------------------------------------------

    def import_item(self, key: str) -> ImportItem | None:
        self._allow(Read.APPLICANT)
        return self._own(self._store.get_import_item(key))

    def application_records(self, application_id: str, model_pack: str) -> list[Record]:
        self._allow(Read.APPLICANT)
        found = self._store.find_application_records(
            tenant=self.tenant,
            application_id=identifiers.application_id(application_id),
            model_pack=model_pack,
        )
        return [r for r in found if self._own(r) is not None]

    # -- audit ---------------------------------------------------------------------------------

    def audit_events(self) -> list[AuditEvent]:
        self._allow(Read.AUDIT)
        return self._store.audit_events(tenant=self.tenant)

    # -- images --------------------------------------------------------------------------------

    def _image_key(self, key: str) -> str:
        if not key.startswith(f"{self.tenant}/") or ".." in key:  # blob_keys.record_prefix's layout
            raise NotFound("no such image")
        return key

    def image(self, key: str) -> bytes:
        """The bytes of one of this tenant's face images (the blob key layout: blob_keys.py)."""
        self._allow(Read.IMAGES)
        return self._blobs.get(self._image_key(key))

    def image_url(self, key: str, expires_seconds: int) -> str | None:
        """A presigned link to the image where the blob store gives them, else None."""
        self._allow(Read.IMAGES)
        return self._blobs.presigned_url(self._image_key(key), expires_seconds)
