"""Ports: what the core needs from the outside world. Adapters live in `face_dedup.adapters`
(embedded/local ones here; AWS ones beside them) and are chosen by `bootstrap` from settings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.domain import (
    AuditEvent,
    Case,
    ImportItem,
    Notification,
    Record,
    RecordStatus,
    StagedInput,
)
from face_dedup.record_templates import Template

if TYPE_CHECKING:  # names only: the core needs no model code to speak of the engine
    from face_dedup.analysis import FaceTemplate, Rejection
    from face_dedup.models.registry import ModelPack


class FaceAnalyzer(ABC):
    """The engine as the use cases see it: photo bytes in, the subject's template out, or a
    typed rejection (never an exception for a bad photo). `pack` names the model pack whose
    templates it makes; its calibration and index partition follow from it. The real one is
    `vision.pipeline.FaceEngine` (ONNX models); tests of business rules use a named fake."""

    pack: ModelPack

    @abstractmethod
    def process(self, data: bytes) -> FaceTemplate | Rejection:
        """Pure and thread-safe: decode, detect, check quality, align, embed."""

    @abstractmethod
    def crop_png(self, crop: NDArray[np.uint8]) -> bytes:
        """A template's aligned crop as PNG, the image officers review: encoding stays behind
        the engine, so the use cases that store it load no image library."""

    def embed_crop(self, png: bytes) -> NDArray[np.float32] | None:
        """The embedding of a stored aligned crop (PNG) as it is, without detecting again, or
        None when this analyzer cannot, or the image is not a crop of its pack's size: the
        caller then analyses the photo again. A migration uses it when both packs align alike;
        only the real engine embeds a crop (a named fake re-detects from the photo)."""
        return None

    def threads_per_core(self) -> int:
        """Analysis threads that keep one core busy: 1 where all the work runs in the calling
        thread; more where the engine hands part of it to threads of its own and waits."""
        return 1


@dataclass(frozen=True)
class IndexEntry:
    record_id: str
    tenant: str
    model_pack: str
    vector: NDArray[np.float32]


@dataclass(frozen=True)
class Hit:
    record_id: str
    score: float  # cosine similarity, verified by the adapter whatever the engine reports


@dataclass(frozen=True)
class RadialResult:
    """Every hit at or above a score, best first, up to a limit. `capped`: the result hit a
    size cap (the caller's limit, or the engine's candidate pool), so more faces may be at or
    above the score than are listed: the caller must never treat the list as complete (the
    de-duplication decision escalates such a search to a case for an officer)."""

    hits: list[Hit]
    capped: bool


class VectorIndex(ABC):
    """k-NN over L2-normalised embeddings, partitioned by tenant and model pack: a search
    never crosses either boundary."""

    @abstractmethod
    def add(self, entries: Sequence[IndexEntry]) -> None:
        """Insert or replace (by record id)."""

    @abstractmethod
    def search(
        self,
        vector: NDArray[np.float32],
        *,
        tenant: str,
        model_pack: str,
        k: int,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Best `k` hits, highest score first; with `min_score`, only hits at or above it."""

    def search_above(
        self, vector: NDArray[np.float32], *, tenant: str, model_pack: str, min_score: float, limit: int
    ) -> RadialResult:
        """Everything at or above `min_score` (radial search), at most `limit` hits, and whether
        that was everything. Asks for one more than `limit`: if it comes back, the list is cut.
        An adapter whose engine has its own cap (a candidate pool) must make `search` return
        more than `k` hits' worth of evidence or override this."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        hits = self.search(vector, tenant=tenant, model_pack=model_pack, k=limit + 1, min_score=min_score)
        return RadialResult(hits[:limit], capped=len(hits) > limit)

    @abstractmethod
    def delete(self, record_ids: Iterable[str]) -> int:
        """Remove; returns how many were present."""

    @abstractmethod
    def count(self, *, tenant: str, model_pack: str) -> int: ...

    @abstractmethod
    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; persistent adapters flush here."""


class BulkAnswers(ABC):
    """Search answers worked out in advance for a batch of photos (bulk import, bulk.py): the
    photos' templates are appended, joined in one go, and each search is answered from the join
    at that photo's turn (`expect`), as the index would answer it."""

    answered: int  # searches answered from the join
    fallbacks: int  # searches left to the index's own scan

    @property
    @abstractmethod
    def size(self) -> int:
        """Templates held: the index's at the start, then those appended."""

    @abstractmethod
    def append(self, vector: NDArray[np.float32]) -> int:
        """Add a template of the batch; returns its row."""

    @abstractmethod
    def join(self, start: int, threshold: float) -> None:
        """Pairs of rows from `start` on with every earlier row, at or above `threshold`."""

    @abstractmethod
    def expect(self, row: int | None) -> None:
        """The next searches are for the template at `row` (None: for none of the batch)."""


class BulkAnswering(ABC):
    """An index that can answer a bulk import's searches from a self-join (the embedded one)."""

    @abstractmethod
    def bulk_answers(self, tenant: str, model_pack: str, threshold: float) -> BulkAnswers:
        """Answers for one partition, asked first on every search until `stop_answering`."""

    @abstractmethod
    def stop_answering(self) -> None: ...


@dataclass(frozen=True)
class EnrollmentCommit:
    """Everything one input produces, written atomically (all or nothing)."""

    item: ImportItem
    record: Record | None = None
    case: Case | None = None
    audit: tuple[AuditEvent, ...] = ()


class RecordStore(ABC):
    """Records (with their templates), cases, import items and the append-only audit log."""

    @abstractmethod
    def get_import_item(self, key: str) -> ImportItem | None: ...

    @abstractmethod
    def commit(self, commit: EnrollmentCommit) -> None:
        """Atomic; a second commit of the same item key must leave the first intact."""

    @abstractmethod
    def stage(self, staged: StagedInput) -> None:
        """Park an analysed input for the workflow (replaces one with the same key)."""

    @abstractmethod
    def get_staged(self, key: str) -> StagedInput | None: ...

    @abstractmethod
    def drop_staged(self, key: str) -> None: ...

    @abstractmethod
    def open_case(self, case: Case, probe_status: RecordStatus, audit: tuple[AuditEvent, ...]) -> bool:
        """Open a case on existing records, only if no case with its id exists (then True);
        sets the probe record's status. Atomic."""

    @abstractmethod
    def get_record(self, record_id: str) -> Record | None: ...

    @abstractmethod
    def find_application_records(self, *, tenant: str, application_id: str, model_pack: str) -> list[Record]:
        """Records enrolled for this application (re-submissions, selfies for 1:1 verification)."""

    @abstractmethod
    def describe_records(self, record_ids: Iterable[str]) -> dict[str, Record]:
        """Records by id, for candidate lists (absent ids are left out)."""

    @abstractmethod
    def iter_templates(self, *, tenant: str | None = None) -> Iterable[Record]:
        """Every record with its embedding (rebuilds and reconciles the index)."""

    @abstractmethod
    def count_templates(self, *, tenant: str, model_pack: str) -> int: ...

    def template_packs(self, *, tenant: str) -> frozenset[str] | None:
        """Every model pack the tenant's records have their own templates in (empty: none), from
        an index, never a scan (pack_guard.py asks it at every start); None where the store
        cannot answer that cheaply (the caller then relies on what else protects it)."""
        return None

    def sample_template_pack(self, *, tenant: str) -> str | None:
        """The pack of one of the tenant's records, read from one item (None: no records). Outside
        a cut-over every record of a tenant is in one pack, so this is the registry's pack where
        `template_packs` has no cheap answer (the cloud's deploy-time check, pack_guard.py)."""
        packs = self.template_packs(tenant=tenant)
        if packs is None:
            raise NotImplementedError(f"{type(self).__name__} cannot name its templates' pack")
        return min(packs) if packs else None

    @abstractmethod
    def are_distinct(self, *, tenant: str, record_a: str, record_b: str) -> bool:
        """An officer has decided these two records are different people."""

    @abstractmethod
    def get_case(self, case_id: str) -> Case | None: ...

    @abstractmethod
    def list_cases(
        self, *, tenant: str, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Case]: ...

    @abstractmethod
    def save_case_transition(
        self,
        case: Case,
        *,
        probe_status: RecordStatus | None,
        probe_linked_to: str | None,
        remember_distinct: bool,
        audit: AuditEvent,
    ) -> Case:
        """Store the case's new state only if nobody changed it since it was read (its version
        is still `case.version`), with the probe record's new status and the audit entry, all
        at once; `remember_distinct` keeps the probe/candidate pairs as different people.
        Raises InvalidState when the case changed meanwhile. Returns the stored case."""

    @abstractmethod
    def erase_record(self, record_id: str, audit: AuditEvent) -> dict[str, int]:
        """Delete the record, its template and import items; keep an audit receipt."""

    @abstractmethod
    def append_audit(self, event: AuditEvent) -> None: ...

    @abstractmethod
    def audit_events(self, *, tenant: str | None = None) -> list[AuditEvent]:
        """Oldest first."""

    @abstractmethod
    def outcome_counts(self, *, tenant: str) -> dict[str, int]: ...

    # -- migration between model packs (face_dedup.migration): templates of a pack that is not
    # the records' own yet (or any more). Optional: a store without them cannot migrate.

    def put_pack_template(
        self, *, record_id: str, tenant: str, model_pack: str, embedding: NDArray[np.float32]
    ) -> bool:
        """Keep the record's template in another pack; False when the record no longer exists
        (erased meanwhile: nothing is kept)."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold a second pack's templates")

    def pack_templates(self, *, tenant: str, model_pack: str) -> dict[str, NDArray[np.float32]]:
        """Record id -> template, of the templates kept in `model_pack` beside the records' own."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold a second pack's templates")

    def switch_pack(self, *, tenant: str, source: str, target: str, audit: AuditEvent) -> int:
        """Atomically make every `source` record's `target` template its own, keeping the
        `source` one beside it (for a rollback). Raises InvalidState, changing nothing, when a
        record has no `target` template. Returns how many records switched."""
        raise NotImplementedError(f"{type(self).__name__} cannot switch packs")

    def drop_pack_templates(self, *, tenant: str, model_pack: str) -> int:
        """Erase every template kept in `model_pack` beside the records' own."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold a second pack's templates")

    # -- several templates per record (face_dedup.record_templates). Optional: a store without
    # them holds one template per record (its `embedding`).

    def record_templates(self, record_id: str) -> list[Template]:
        """The record's templates in its own pack, oldest first; [] for a record that holds only
        its enrollment template in `embedding` (nothing was ever added)."""
        raise NotImplementedError(f"{type(self).__name__} holds one template per record")

    def replace_templates(
        self,
        record: Record,
        templates: Sequence[Template],
        centroid: NDArray[np.float32],
        audit: AuditEvent,
    ) -> bool:
        """Atomically make `templates` the record's templates (in its pack) and `centroid` its
        index vector, with the audit entry; only if the record still holds the embedding and
        template count it was read with (else False, nothing changed)."""
        raise NotImplementedError(f"{type(self).__name__} holds one template per record")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class BlobStore(ABC):
    """Face photos and aligned crops, for case officers. Keys never contain personal data."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """The object, if it holds at most `max_bytes`; else BlobTooLarge, raised without
        reading it whole (a photo's size limit is applied before its bytes are held)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]: ...

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        """A short-lived direct link, where the store has them (S3); None: serve it yourself."""
        return None

    def presigned_upload(self, key: str, content_type: str, expires_seconds: int) -> str | None:
        """A short-lived URL a client may PUT one object to; None where not supported."""
        return None

    def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_seconds: int
    ) -> dict[str, Any] | None:
        """A short-lived form upload (`url` and `fields`) of one object of this content type and
        at most `max_bytes`, the store refusing anything else; None where not supported."""
        return None


class Notifier(ABC):
    @abstractmethod
    def notify(self, notification: Notification) -> None: ...


class WorkflowStarter(ABC):
    """Starts the de-duplication workflow for one staged input (ingest.py calls it)."""

    @abstractmethod
    def start(self, name: str, payload: dict[str, Any]) -> str:
        """Start (idempotent by `name`: starting the same name twice starts it once)."""
