"""The review API's reads for a service a test built itself (the composition root gives the
real entry points theirs: `Adapters.queries()`, `FunctionParts.queries`)."""

from __future__ import annotations

from face_dedup.queries import RegistryQueries
from face_dedup.service import DedupService


def queries_of(service: DedupService) -> RegistryQueries:
    """Reads over the same store and blob store the service writes to."""
    return RegistryQueries(service.store, service.blobs)
