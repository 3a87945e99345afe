"""Typed errors. Every rejection of an input carries a stable reason code that reports,
audit entries and API clients can rely on; messages are for people and may change."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes for inputs that cannot be enrolled. Never renumber or rename."""

    # decoding
    EMPTY_FILE = "EMPTY_FILE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    UNDECODABLE = "UNDECODABLE"
    TOO_LARGE = "TOO_LARGE"
    TOO_SMALL = "TOO_SMALL"
    # detection
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    IMPLAUSIBLE_LANDMARKS = "IMPLAUSIBLE_LANDMARKS"
    # quality
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    EXTREME_POSE = "EXTREME_POSE"
    BLURRY = "BLURRY"
    TOO_DARK = "TOO_DARK"
    TOO_BRIGHT = "TOO_BRIGHT"
    # inputs of a batch
    NOT_A_FILE = "NOT_A_FILE"
    UNREADABLE = "UNREADABLE"
    INVALID_APPLICATION_ID = "INVALID_APPLICATION_ID"  # a manifest's id breaks identifiers.py's rule
    LINK_OUTSIDE_FOLDER = "LINK_OUTSIDE_FOLDER"  # a symbolic link out of the imported folder
    # a bug or resource failure while analysing: reported, not persisted, retried on re-run
    INTERNAL_ERROR = "INTERNAL_ERROR"


class FaceDedupError(Exception):
    """Base class of every error this library raises on purpose."""


class ModelError(FaceDedupError):
    """A model pack is missing, corrupt or does not match its contract."""


class InputRejected(FaceDedupError):
    """An input image cannot be used. `reason` is stable; `measured`/`limit` say why."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        measured: float | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.measured = measured
        self.limit = limit


class BlobTooLarge(InputRejected):
    """A stored object is larger than the caller's limit: refused without reading it whole
    (BlobStore.get_limited). `measured` is its size in bytes where the store told it."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        shown = "larger than that" if size is None else f"{size} bytes"
        super().__init__(
            Reason.TOO_LARGE,
            f"the limit is {limit} bytes; the object is {shown}",
            measured=None if size is None else float(size),
            limit=float(limit),
        )
        self.key = key


class TransientError(FaceDedupError):
    """A dependency is briefly unavailable (index, store): retrying later should succeed.
    The workflow retries exactly this error name with backoff."""


class NotFound(FaceDedupError):
    """A record, case or blob that was asked for does not exist (or was erased)."""


class PermissionDenied(FaceDedupError):
    """The actor's role (or the two-person rule) does not allow this."""


class InvalidState(FaceDedupError):
    """An operation is not allowed in the current state (e.g. deciding a closed case)."""


class ConfigError(FaceDedupError):
    """Settings are invalid."""


class StorageError(FaceDedupError):
    """A registry file cannot be used (disk full, read-only, permission, corruption). The
    message is one line naming the file and the fix; `kind` says which (`corrupt`, `full`,
    `read-only`, `permission`, `busy`, `other`)."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class ErasureIncomplete(FaceDedupError):
    """An erasure removed the record, but a copy of its biometric data is still in a file (the
    message names it and what to do)."""
