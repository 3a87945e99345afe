"""The cloud store's DynamoDB tables: key names, secondary indexes, TTL. Declared once, used by
the DynamoDB adapter (adapters/dynamodb_store.py, its queries and `create_tables`) and by the
CDK app's tables construct. Standard library only: synth does not load the runtime.

- records:  record_id; GSI by_tenant (tenant, record_id), by_application (tenant_application, record_id).
- cases:    case_id;   GSI by_tenant (tenant, created_case), by_probe (probe_record_id).
- imports:  key;       GSI by_record (record_id), by_tenant (tenant, key).
- audit:    tenant + event (time-ordered, unique).
- staged:   key; templates waiting for the workflow's decision, expiring by TTL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ROLES: Final = ("records", "cases", "imports", "audit", "staged")


@dataclass(frozen=True)
class TableNames:
    records: str
    cases: str
    imports: str
    audit: str
    staged: str

    @classmethod
    def with_prefix(cls, prefix: str) -> TableNames:
        return cls(*(f"{prefix}{role}" for role in ROLES))


# role -> (partition key, sort key or None, {index name: (partition key, sort key or None)})
TABLES: Final[dict[str, tuple[str, str | None, dict[str, tuple[str, str | None]]]]] = {
    "records": (
        "record_id",
        None,
        {"by_tenant": ("tenant", "record_id"), "by_application": ("tenant_application", "record_id")},
    ),
    "cases": (
        "case_id",
        None,
        {"by_tenant": ("tenant", "created_case"), "by_probe": ("probe_record_id", None)},
    ),
    "imports": ("key", None, {"by_record": ("record_id", None), "by_tenant": ("tenant", "key")}),
    "audit": ("tenant", "event", {}),
    "staged": ("key", None, {}),
}
# Staged templates expire (DynamoDB TTL on this attribute) if their workflow never completes.
STAGED_TTL_ATTRIBUTE: Final = "expires_at"
STAGED_TTL_SECONDS: Final = 7 * 24 * 3600
