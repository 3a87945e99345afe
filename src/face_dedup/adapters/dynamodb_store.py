"""DynamoDB adapter of the record/case/audit store (the cloud deployment's store).

Tables: names are settings; keys, indexes and TTL are `face_dedup.table_schema` (the one
schema the CDK app and the tests also use). Records hold the template (binary); the audit
table is appended to.

One input's writes are one TransactWriteItems call, conditioned on the import item not
existing: a retried or duplicated event leaves the first outcome intact. Case decisions are
conditional updates (status must still be open), so two officers cannot both decide.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.domain import (
    AuditEvent,
    Case,
    CaseDecision,
    CaseStatus,
    ImportItem,
    Outcome,
    Record,
    RecordStatus,
    StagedInput,
    candidates_from_json,
    candidates_to_json,
)
from face_dedup.errors import InvalidState, NotFound
from face_dedup.ports import EnrollmentCommit, RecordStore
from face_dedup.record_templates import Template, TemplateSource
from face_dedup.table_schema import STAGED_TTL_ATTRIBUTE as STAGED_TTL_ATTRIBUTE
from face_dedup.table_schema import STAGED_TTL_SECONDS as STAGED_TTL_SECONDS
from face_dedup.table_schema import TABLES as TABLES
from face_dedup.table_schema import TableNames as TableNames


def create_tables(client: Any, names: TableNames) -> None:
    """Create the tables (local runs and tests; the CDK app creates them in the cloud)."""
    for role, (pk, sk, indexes) in TABLES.items():
        attributes = {pk} | ({sk} if sk else set())
        keys = [{"AttributeName": pk, "KeyType": "HASH"}] + (
            [{"AttributeName": sk, "KeyType": "RANGE"}] if sk else []
        )
        gsis = []
        for index, (ipk, isk) in indexes.items():
            attributes |= {ipk} | ({isk} if isk else set())
            schema = [{"AttributeName": ipk, "KeyType": "HASH"}]
            if isk:
                schema.append({"AttributeName": isk, "KeyType": "RANGE"})
            gsis.append({"IndexName": index, "KeySchema": schema, "Projection": {"ProjectionType": "ALL"}})
        params: dict[str, Any] = {
            "TableName": getattr(names, role),
            "KeySchema": keys,
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if gsis:
            params["GlobalSecondaryIndexes"] = gsis
        client.create_table(**params)
        if role == "staged":
            client.update_time_to_live(
                TableName=params["TableName"],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": STAGED_TTL_ATTRIBUTE},
            )


# -- attribute value encoding (low-level client: no float or Decimal surprises) ---------------


def pack_attribute(model_pack: str) -> str:
    """The records-table attribute holding a record's template in another pack than its own."""
    return f"pack:{model_pack}"


def _s(value: str | None) -> dict[str, Any] | None:
    return None if value is None else {"S": value}


def _item(**attributes: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


class DynamoRecordStore(RecordStore):
    def __init__(self, client: Any, names: TableNames) -> None:
        """`client` is a boto3 DynamoDB client (low-level, built once per process)."""
        self._client = client
        self._names = names

    # -- helpers ----------------------------------------------------------------------------

    def _query(self, **params: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(**params):
            yield from page.get("Items", [])

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item = self._client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item if item else None

    def _audit_put(self, event: AuditEvent) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._names.audit,
                "Item": _item(
                    tenant=_s(event.tenant),
                    # time-ordered and unique without a shared counter
                    event=_s(f"{event.at}#{uuid.uuid4().hex[:16]}"),
                    at=_s(event.at),
                    actor=_s(event.actor),
                    action=_s(event.action),
                    details=_s(json.dumps(event.details, sort_keys=True, default=_json_default)),
                ),
                "ConditionExpression": "attribute_not_exists(#e)",
                "ExpressionAttributeNames": {"#e": "event"},
            }
        }

    # -- import items and enrollment --------------------------------------------------------

    def get_import_item(self, key: str) -> ImportItem | None:
        item = self._get(self._names.imports, {"key": {"S": key}})
        return None if item is None else self._import_item(item)

    def commit(self, commit: EnrollmentCommit) -> None:
        item = commit.item
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._names.imports,
                    "Item": _item(
                        key=_s(item.key),
                        tenant=_s(item.tenant),
                        source=_s(item.source),
                        application_id=_s(item.application_id),
                        content_sha256=_s(item.content_sha256),
                        outcome=_s(item.outcome.value),
                        record_id=_s(item.record_id),
                        case_id=_s(item.case_id),
                        reason=_s(item.reason),
                        message=_s(item.message),
                        candidates=_s(candidates_to_json(item.candidates)),
                        measures=_s(json.dumps(item.measures)),
                        created_at=_s(item.created_at),
                    ),
                    "ConditionExpression": "attribute_not_exists(#k)",
                    "ExpressionAttributeNames": {"#k": "key"},
                }
            }
        ]
        if commit.record is not None:
            record = commit.record
            writes.append(
                {
                    "Put": {
                        "TableName": self._names.records,
                        "Item": _item(
                            record_id=_s(record.record_id),
                            tenant=_s(record.tenant),
                            tenant_application=_s(
                                f"{record.tenant}#{record.application_id}" if record.application_id else None
                            ),
                            model_pack=_s(record.model_pack),
                            application_id=_s(record.application_id),
                            source=_s(record.source),
                            content_sha256=_s(record.content_sha256),
                            status=_s(record.status.value),
                            linked_to=_s(record.linked_to),
                            created_at=_s(record.created_at),
                            quality=_s(json.dumps(record.quality)),
                            embedding={"B": np.asarray(record.embedding, dtype=np.float32).tobytes()},
                        ),
                        "ConditionExpression": "attribute_not_exists(record_id)",
                    }
                }
            )
        if commit.case is not None:
            writes.append({"Put": {"TableName": self._names.cases, "Item": self._case_item(commit.case)}})
        writes += [self._audit_put(event) for event in commit.audit]
        try:
            self._client.transact_write_items(TransactItems=writes)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return  # the import item exists: idempotent, the first commit stands
            raise

    def _case_item(self, case: Case) -> dict[str, Any]:
        return _item(
            case_id=_s(case.case_id),
            tenant=_s(case.tenant),
            created_case=_s(f"{case.created_at}#{case.case_id}"),
            probe_record_id=_s(case.probe_record_id),
            kind=_s(case.kind.value),
            candidates=_s(candidates_to_json(case.candidates)),
            status=_s(case.status.value),
            created_at=_s(case.created_at),
            thresholds=_s(json.dumps(case.thresholds, default=_json_default)),
            decision=_s(case.decision.value if case.decision else None),
            decided_by=_s(case.decided_by),
            decided_at=_s(case.decided_at),
            comment=_s(case.comment),
            matched_record_id=_s(case.matched_record_id),
            claimed_by=_s(case.claimed_by),
            confirmed_by=_s(case.confirmed_by),
            confirmed_at=_s(case.confirmed_at),
            escalated={"BOOL": case.escalated},
            history=_s(json.dumps(list(case.history), default=_json_default)),
            version={"N": str(case.version)},
        )

    # -- staged inputs (serverless workflow) ------------------------------------------------

    def stage(self, staged: StagedInput) -> None:
        self._client.put_item(
            TableName=self._names.staged,
            Item=_item(
                key=_s(staged.key),
                record_id=_s(staged.record_id),
                tenant=_s(staged.tenant),
                model_pack=_s(staged.model_pack),
                source=_s(staged.source),
                application_id=_s(staged.application_id),
                content_sha256=_s(staged.content_sha256),
                embedding={"B": np.asarray(staged.embedding, dtype=np.float32).tobytes()},
                measures=_s(json.dumps(staged.measures)),
                quality=_s(json.dumps(staged.quality)),
                created_at=_s(staged.created_at),
                **{STAGED_TTL_ATTRIBUTE: {"N": str(int(time.time()) + STAGED_TTL_SECONDS)}},
            ),
        )

    def get_staged(self, key: str) -> StagedInput | None:
        item = self._get(self._names.staged, {"key": {"S": key}})
        if item is None:
            return None
        return StagedInput(
            key=str(_str(item, "key")),
            record_id=str(_str(item, "record_id")),
            tenant=str(_str(item, "tenant")),
            model_pack=str(_str(item, "model_pack")),
            source=str(_str(item, "source")),
            application_id=_str(item, "application_id"),
            content_sha256=str(_str(item, "content_sha256")),
            embedding=np.frombuffer(bytes(item["embedding"]["B"]), dtype=np.float32),
            measures=json.loads(str(_str(item, "measures"))),
            quality=json.loads(str(_str(item, "quality"))),
            created_at=str(_str(item, "created_at")),
        )

    def drop_staged(self, key: str) -> None:
        self._client.delete_item(TableName=self._names.staged, Key={"key": {"S": key}})

    def open_case(self, case: Case, probe_status: RecordStatus, audit: tuple[AuditEvent, ...]) -> bool:
        writes = [
            {
                "Put": {
                    "TableName": self._names.cases,
                    "Item": self._case_item(case),
                    "ConditionExpression": "attribute_not_exists(case_id)",
                }
            },
            {
                "Update": {
                    "TableName": self._names.records,
                    "Key": {"record_id": {"S": case.probe_record_id}},
                    "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":s": {"S": probe_status.value}},
                    "ConditionExpression": "attribute_exists(record_id)",
                }
            },
            *(self._audit_put(event) for event in audit),
        ]
        try:
            self._client.transact_write_items(TransactItems=writes)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    # -- records ----------------------------------------------------------------------------

    def get_record(self, record_id: str) -> Record | None:
        item = self._get(self._names.records, {"record_id": {"S": record_id}})
        return None if item is None else self._record(item)

    def find_application_records(self, *, tenant: str, application_id: str, model_pack: str) -> list[Record]:
        return [
            record
            for record in (
                self._record(item)
                for item in self._query(
                    TableName=self._names.records,
                    IndexName="by_application",
                    KeyConditionExpression="tenant_application = :a",
                    ExpressionAttributeValues={":a": {"S": f"{tenant}#{application_id}"}},
                )
            )
            if record.model_pack == model_pack
        ]

    def describe_records(self, record_ids: Iterable[str]) -> dict[str, Record]:
        ids = list(dict.fromkeys(record_ids))
        found: dict[str, Record] = {}
        for start in range(0, len(ids), 100):  # BatchGetItem takes at most 100 keys
            request = {
                self._names.records: {
                    "Keys": [{"record_id": {"S": i}} for i in ids[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self._names.records, []):
                    record = self._record(item)
                    found[record.record_id] = record
                request = response.get("UnprocessedKeys") or {}
        return found

    def iter_templates(self, *, tenant: str | None = None) -> Iterator[Record]:
        if tenant is None:
            paginator = self._client.get_paginator("scan")
            for page in paginator.paginate(TableName=self._names.records, ConsistentRead=True):
                for item in page.get("Items", []):
                    yield self._record(item)
            return
        for item in self._query(
            TableName=self._names.records,
            IndexName="by_tenant",
            KeyConditionExpression="tenant = :t",
            ExpressionAttributeValues={":t": {"S": tenant}},
        ):
            yield self._record(item)

    def are_distinct(self, *, tenant: str, record_a: str, record_b: str) -> bool:
        # Remembered on the probe's record (whichever of the two it was).
        for mine, theirs in ((record_a, record_b), (record_b, record_a)):
            item = self._get(self._names.records, {"record_id": {"S": mine}})
            if (
                item
                and _str(item, "tenant") == tenant
                and theirs in item.get("distinct_from", {}).get("SS", [])
            ):
                return True
        return False

    def sample_template_pack(self, *, tenant: str) -> str | None:
        """One item of the by_tenant GSI (Limit 1, one attribute): the table has no key on the
        pack, so every pack of a tenant (`template_packs`) would be a read of all its items."""
        page = self._client.query(
            TableName=self._names.records,
            IndexName="by_tenant",
            KeyConditionExpression="tenant = :t",
            ExpressionAttributeValues={":t": {"S": tenant}},
            ProjectionExpression="model_pack",
            Limit=1,
        )
        items = page.get("Items", [])
        return _str(items[0], "model_pack") if items else None

    def count_templates(self, *, tenant: str, model_pack: str) -> int:
        paginator = self._client.get_paginator("query")
        total = 0
        for page in paginator.paginate(
            TableName=self._names.records,
            IndexName="by_tenant",
            KeyConditionExpression="tenant = :t",
            FilterExpression="model_pack = :p",
            ExpressionAttributeValues={":t": {"S": tenant}, ":p": {"S": model_pack}},
            Select="COUNT",
        ):
            total += int(page["Count"])
        return total

    # -- cases ------------------------------------------------------------------------------

    def get_case(self, case_id: str) -> Case | None:
        item = self._get(self._names.cases, {"case_id": {"S": case_id}})
        return None if item is None else self._case(item)

    def list_cases(
        self, *, tenant: str, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Case]:
        params: dict[str, Any] = {
            "TableName": self._names.cases,
            "IndexName": "by_tenant",
            "KeyConditionExpression": "tenant = :t",
            "ExpressionAttributeValues": {":t": {"S": tenant}},
        }
        if status:
            params["FilterExpression"] = "#s = :s"
            params["ExpressionAttributeNames"] = {"#s": "status"}
            params["ExpressionAttributeValues"][":s"] = {"S": status}
        cases: list[Case] = []
        for position, item in enumerate(self._query(**params)):
            if position < offset:
                continue
            if len(cases) >= limit:
                break
            cases.append(self._case(item))
        return cases

    def save_case_transition(
        self,
        case: Case,
        *,
        probe_status: RecordStatus | None,
        probe_linked_to: str | None,
        remember_distinct: bool,
        audit: AuditEvent,
    ) -> Case:
        stored = replace(case, version=case.version + 1)
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._names.cases,
                    "Item": self._case_item(stored),
                    "ConditionExpression": "version = :v",
                    "ExpressionAttributeValues": {":v": {"N": str(case.version)}},
                }
            }
        ]
        if probe_status is not None:
            update: dict[str, Any] = {
                "TableName": self._names.records,
                "Key": {"record_id": {"S": case.probe_record_id}},
                "UpdateExpression": "SET #s = :s"
                + (", linked_to = :l" if probe_linked_to else " REMOVE linked_to"),
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": {"S": probe_status.value}},
                "ConditionExpression": "attribute_exists(record_id)",
            }
            if probe_linked_to:
                update["ExpressionAttributeValues"][":l"] = {"S": probe_linked_to}
            if remember_distinct and case.candidates:
                # The pairs an officer found distinct live on the probe's record (erased with it).
                update["UpdateExpression"] = update["UpdateExpression"].replace(
                    "SET #s = :s", "SET #s = :s ADD distinct_from :d"
                )
                update["ExpressionAttributeValues"][":d"] = {"SS": [c.record_id for c in case.candidates]}
            writes.append({"Update": update})
        writes.append(self._audit_put(audit))
        try:
            self._client.transact_write_items(TransactItems=writes)
        except self._client.exceptions.TransactionCanceledException:
            if self.get_case(case.case_id) is None:
                raise NotFound(f"no case {case.case_id}") from None
            raise InvalidState(
                f"case {case.case_id} was changed by someone else meanwhile; reload it"
            ) from None
        return stored

    # -- erasure ----------------------------------------------------------------------------

    def erase_record(self, record_id: str, audit: AuditEvent) -> dict[str, int]:
        if self.get_record(record_id) is None:
            raise NotFound(f"no record {record_id} (never enrolled, or already erased)")
        items = list(
            self._query(
                TableName=self._names.imports,
                IndexName="by_record",
                KeyConditionExpression="record_id = :r",
                ExpressionAttributeValues={":r": {"S": record_id}},
            )
        )
        open_cases = [
            item
            for item in self._query(
                TableName=self._names.cases,
                IndexName="by_probe",
                KeyConditionExpression="probe_record_id = :r",
                ExpressionAttributeValues={":r": {"S": record_id}},
            )
            if _str(item, "status") == CaseStatus.OPEN.value
        ]
        writes: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._names.records,
                    "Key": {"record_id": {"S": record_id}},
                    "ConditionExpression": "attribute_exists(record_id)",
                }
            }
        ]
        writes += [
            {"Delete": {"TableName": self._names.imports, "Key": {"key": item["key"]}}} for item in items
        ]
        writes += [
            {
                "Update": {
                    "TableName": self._names.cases,
                    "Key": {"case_id": item["case_id"]},
                    "UpdateExpression": "SET #s = :closed, #c = :c ADD version :one",
                    "ExpressionAttributeNames": {"#s": "status", "#c": "comment"},
                    "ExpressionAttributeValues": {
                        ":closed": {"S": CaseStatus.CLOSED.value},
                        ":c": {"S": "probe record erased"},
                        ":one": {"N": "1"},
                    },
                }
            }
            for item in open_cases
        ]
        writes.append(self._audit_put(audit))
        try:
            self._client.transact_write_items(TransactItems=writes)
        except self._client.exceptions.TransactionCanceledException:
            raise NotFound(f"no record {record_id} (erased meanwhile)") from None
        return {"records": 1, "import_items": len(items), "cases_closed": len(open_cases)}

    # -- several templates per record (record_templates.py) -----------------------------------
    # A record's templates live on its own item (attribute `templates`, a list): erasing the
    # record (one DeleteItem) erases every one of them. Its `embedding` is their centroid.

    def record_templates(self, record_id: str) -> list[Template]:
        item = self._get(self._names.records, {"record_id": {"S": record_id}})
        if item is None:
            return []
        pack = _str(item, "model_pack")
        stored = [self._template(record_id, t["M"]) for t in item.get("templates", {}).get("L", [])]
        return sorted((t for t in stored if t.model_pack == pack), key=lambda t: t.number)

    def replace_templates(
        self,
        record: Record,
        templates: Sequence[Template],
        centroid: NDArray[np.float32],
        audit: AuditEvent,
    ) -> bool:
        item = self._get(self._names.records, {"record_id": {"S": record.record_id}})
        if item is None:
            return False
        # A migration's copy of this record in another pack is stale now: it goes, so the next
        # migration run re-embeds the record.
        stale = [name for name in item if name.startswith("pack:")]
        names = {f"#p{i}": name for i, name in enumerate(stale)}
        update = {
            "TableName": self._names.records,
            "Key": {"record_id": {"S": record.record_id}},
            "UpdateExpression": "SET embedding = :e, template_count = :n, templates = :t"
            + (f" REMOVE {', '.join(names)}" if names else ""),
            "ConditionExpression": "embedding = :old AND model_pack = :p AND "
            "(template_count = :count OR (attribute_not_exists(template_count) AND :count = :one))",
            "ExpressionAttributeValues": {
                ":e": {"B": np.asarray(centroid, dtype=np.float32).tobytes()},
                ":n": {"N": str(len(templates))},
                ":t": {"L": [{"M": self._template_item(t)} for t in templates]},
                ":old": {"B": np.asarray(record.embedding, dtype=np.float32).tobytes()},
                ":p": {"S": record.model_pack},
                ":count": {"N": str(record.template_count)},
                ":one": {"N": "1"},
            },
        }
        if names:
            update["ExpressionAttributeNames"] = names
        try:
            self._client.transact_write_items(TransactItems=[{"Update": update}, self._audit_put(audit)])
        except self._client.exceptions.TransactionCanceledException:
            return False
        return True

    def put_pack_record_templates(
        self, *, record_id: str, tenant: str, templates: list[Template], centroid: NDArray[np.float32]
    ) -> bool:
        """A migration's re-embedded templates of a several-template record (all of one other
        pack) go into the record's `templates` list beside its own, and their centroid is the
        record's template in that pack (`pack:<id>`); False when the record is gone, in another
        tenant, already in that pack, or changed since it was read (a photo added meanwhile:
        it is re-embedded on the next run)."""
        if not templates:
            raise ValueError("no templates")
        pack = templates[0].model_pack
        if any(t.model_pack != pack or t.record_id != record_id for t in templates):
            raise ValueError("the templates are not all this record's, in one pack")
        item = self._get(self._names.records, {"record_id": {"S": record_id}})
        if item is None:
            return False
        kept = [t for t in item.get("templates", {}).get("L", []) if t["M"]["model_pack"]["S"] != pack]
        update: dict[str, Any] = {
            "TableName": self._names.records,
            "Key": {"record_id": {"S": record_id}},
            "UpdateExpression": "SET templates = :t, #p = :c",
            "ConditionExpression": "attribute_exists(record_id) AND tenant = :tenant AND model_pack = :own "
            "AND model_pack <> :pack AND embedding = :e AND "
            "(template_count = :count OR (attribute_not_exists(template_count) AND :count = :one))",
            "ExpressionAttributeNames": {"#p": pack_attribute(pack)},
            "ExpressionAttributeValues": {
                ":t": {"L": kept + [{"M": self._template_item(t)} for t in templates]},
                ":c": {"B": np.asarray(centroid, dtype=np.float32).tobytes()},
                ":tenant": {"S": tenant},
                ":own": item["model_pack"],
                ":pack": {"S": pack},
                ":e": item["embedding"],
                ":count": item.get("template_count", {"N": "1"}),
                ":one": {"N": "1"},
            },
        }
        try:
            self._client.update_item(**update)
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    @staticmethod
    def _template_item(template: Template) -> dict[str, Any]:
        return {
            "number": {"N": str(template.number)},
            "model_pack": {"S": template.model_pack},
            "source": {"S": template.source.value},
            "captured_at": {"S": template.captured_at},
            "added_at": {"S": template.added_at},
            "quality": {"S": json.dumps(template.quality)},
            "embedding": {"B": np.asarray(template.embedding, dtype=np.float32).tobytes()},
        }

    @staticmethod
    def _template(record_id: str, item: dict[str, Any]) -> Template:
        return Template(
            record_id=record_id,
            number=int(item["number"]["N"]),
            model_pack=str(item["model_pack"]["S"]),
            source=TemplateSource(item["source"]["S"]),
            captured_at=str(item["captured_at"]["S"]),
            added_at=str(item["added_at"]["S"]),
            quality=json.loads(item["quality"]["S"]),
            embedding=np.frombuffer(bytes(item["embedding"]["B"]), dtype=np.float32),
        )

    # -- audit ------------------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> None:
        put = self._audit_put(event)["Put"]
        self._client.put_item(**put)

    def audit_events(self, *, tenant: str | None = None) -> list[AuditEvent]:
        if tenant is None:
            paginator = self._client.get_paginator("scan")
            items = [
                i for page in paginator.paginate(TableName=self._names.audit) for i in page.get("Items", [])
            ]
            items.sort(key=lambda i: str(i["event"]["S"]))
        else:
            items = list(
                self._query(
                    TableName=self._names.audit,
                    KeyConditionExpression="tenant = :t",
                    ExpressionAttributeValues={":t": {"S": tenant}},
                    ConsistentRead=True,
                )
            )
        return [
            AuditEvent(
                action=str(_str(i, "action")),
                actor=str(_str(i, "actor")),
                tenant=str(_str(i, "tenant")),
                at=str(_str(i, "at")),
                details=json.loads(str(_str(i, "details"))),
            )
            for i in items
        ]

    def outcome_counts(self, *, tenant: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self._query(
            TableName=self._names.imports,
            IndexName="by_tenant",
            KeyConditionExpression="tenant = :t",
            ExpressionAttributeValues={":t": {"S": tenant}},
            ProjectionExpression="outcome",
        ):
            outcome = str(_str(item, "outcome"))
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    # -- migration between model packs (face_dedup.migration; the cloud job in cloud_migration)
    # A second pack's template lives on the record's own item, as the binary attribute
    # `pack:<pack id>`: erasing the record (one DeleteItem) erases it too, and no query for
    # one pack's templates can return another's.

    def put_pack_template(self, *, record_id: str, tenant: str, model_pack: str, embedding: Any) -> bool:
        try:
            self._client.update_item(
                TableName=self._names.records,
                Key={"record_id": {"S": record_id}},
                UpdateExpression="SET #t = :v",
                # only while the record exists (an erasure that got there first wins), in this
                # tenant, and in another pack than the one being kept
                ConditionExpression="attribute_exists(record_id) AND tenant = :tenant AND model_pack <> :p",
                ExpressionAttributeNames={"#t": pack_attribute(model_pack)},
                ExpressionAttributeValues={
                    ":v": {"B": np.asarray(embedding, dtype=np.float32).tobytes()},
                    ":tenant": {"S": tenant},
                    ":p": {"S": model_pack},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _pack_items(
        self, tenant: str, expression: str, model_pack: str, **values: Any
    ) -> Iterator[dict[str, Any]]:
        names = {"ExpressionAttributeNames": {"#t": pack_attribute(model_pack)}} if "#t" in expression else {}
        yield from self._query(
            TableName=self._names.records,
            IndexName="by_tenant",
            KeyConditionExpression="tenant = :tenant",
            FilterExpression=expression,
            ExpressionAttributeValues={":tenant": {"S": tenant}, **values},
            **names,
        )

    def pack_templates(self, *, tenant: str, model_pack: str) -> dict[str, Any]:
        return {
            str(_str(item, "record_id")): np.frombuffer(
                bytes(item[pack_attribute(model_pack)]["B"]), np.float32
            )
            for item in self._pack_items(tenant, "attribute_exists(#t)", model_pack)
        }

    def missing_pack_templates(
        self, *, tenant: str, model_pack: str, record_ids: Iterable[str]
    ) -> dict[str, int]:
        """Those of `record_ids` in the tenant, in another pack, without a `model_pack` template
        (in the given order), each with how many templates the record holds. A record of several
        templates whose `model_pack` copy was not re-made from every one of them is missing too."""
        ids = list(dict.fromkeys(record_ids))
        attribute = pack_attribute(model_pack)
        missing: dict[str, int] = {}
        for start in range(0, len(ids), 100):  # BatchGetItem takes at most 100 keys
            request: dict[str, Any] = {
                self._names.records: {
                    "Keys": [{"record_id": {"S": i}} for i in ids[start : start + 100]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "record_id, tenant, model_pack, template_count, templates, #t",
                    "ExpressionAttributeNames": {"#t": attribute},
                }
            }
            while request:
                response = self._client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self._names.records, []):
                    count = _template_count(item)
                    if (
                        _str(item, "tenant") == tenant
                        and _str(item, "model_pack") != model_pack
                        and (
                            attribute not in item
                            or (count > 1 and _pack_template_count(item, model_pack) != count)
                        )
                    ):
                        missing[str(_str(item, "record_id"))] = count
                request = response.get("UnprocessedKeys") or {}
        return {rid: missing[rid] for rid in ids if rid in missing}

    def switch_pack(self, *, tenant: str, source: str, target: str, audit: AuditEvent) -> int:
        # DynamoDB has no transaction over a whole registry (100 items at most), so the switch
        # is one conditional update per record: a record switches once (`model_pack = source`
        # is the condition), and an interrupted switch is finished by running it again. The
        # caller (face_dedup.migration) sees the half-switched state as `interrupted`.
        # A record of several photos (record_templates) switches only when it holds the target
        # pack's re-made template of every one of them (put_pack_record_templates, whose
        # centroid is its `pack:<target>`); its template count becomes theirs, so the score
        # offset of a several-template record stays right after the cut-over and a rollback.
        attribute = pack_attribute(target)
        items = list(self._pack_items(tenant, "model_pack = :s", target, **{":s": {"S": source}}))
        ready = [(item, _pack_template_count(item, target)) for item in items if attribute in item]
        missing = len(items) - len(ready)
        stale = sum(1 for item, count in ready if count != _template_count(item) and count)
        several = sum(1 for item, count in ready if _template_count(item) > 1 and not count)
        if missing or stale or several:
            raise InvalidState(
                f"{missing + stale + several} record(s) of {source} have no {target} template yet"
                + (
                    f" ({stale + several} of several templates not re-made from all their photos)"
                    if stale or several
                    else ""
                )
            )
        switched = 0
        for item, count in ready:
            try:
                self._client.update_item(
                    TableName=self._names.records,
                    Key={"record_id": item["record_id"]},
                    # the record's own template goes beside it (rollback); the target's becomes its own
                    UpdateExpression="SET model_pack = :target, embedding = :new, #o = :old, "
                    "template_count = :n REMOVE #t",
                    # unchanged since it was read: a photo added meanwhile makes it wait
                    ConditionExpression=(
                        "model_pack = :s AND #t = :new AND embedding = :old AND (template_count = :count "
                        "OR (attribute_not_exists(template_count) AND :count = :one))"
                    ),
                    ExpressionAttributeNames={"#t": attribute, "#o": pack_attribute(source)},
                    ExpressionAttributeValues={
                        ":target": {"S": target},
                        ":s": {"S": source},
                        ":new": item[attribute],
                        ":old": item["embedding"],
                        ":n": {"N": str(max(1, count))},
                        ":count": {"N": str(_template_count(item))},
                        ":one": {"N": "1"},
                    },
                )
                switched += 1
            except self._client.exceptions.ConditionalCheckFailedException:
                continue  # erased, changed or switched by a concurrent run: run the switch again
        self.append_audit(audit)
        return switched

    def drop_pack_templates(self, *, tenant: str, model_pack: str) -> int:
        """Erase `model_pack`'s templates kept beside records of other packs: the `pack:<id>`
        template and, for a record of several photos, that pack's entries in its list."""
        dropped = 0
        for item in self._pack_items(tenant, "model_pack <> :p", model_pack, **{":p": {"S": model_pack}}):
            listed = item.get("templates", {}).get("L", [])
            kept = [t for t in listed if t["M"]["model_pack"]["S"] != model_pack]
            if pack_attribute(model_pack) not in item and len(kept) == len(listed):
                continue
            try:
                self._client.update_item(
                    TableName=self._names.records,
                    Key={"record_id": item["record_id"]},
                    UpdateExpression="SET templates = :t REMOVE #t",
                    # unchanged since it was read: a photo added meanwhile changes the centroid
                    ConditionExpression="attribute_exists(record_id) AND model_pack <> :p AND embedding = :e",
                    ExpressionAttributeNames={"#t": pack_attribute(model_pack)},
                    ExpressionAttributeValues={
                        ":t": {"L": kept},
                        ":p": {"S": model_pack},
                        ":e": item["embedding"],
                    },
                )
                dropped += pack_attribute(model_pack) in item
            except self._client.exceptions.ConditionalCheckFailedException:
                continue  # erased, or a photo added: either took the other packs' templates
        return dropped

    # -- item mapping -----------------------------------------------------------------------

    @staticmethod
    def _record(item: dict[str, Any]) -> Record:
        return Record(
            record_id=str(_str(item, "record_id")),
            tenant=str(_str(item, "tenant")),
            model_pack=str(_str(item, "model_pack")),
            application_id=_str(item, "application_id"),
            source=str(_str(item, "source")),
            content_sha256=str(_str(item, "content_sha256")),
            status=RecordStatus(str(_str(item, "status"))),
            created_at=str(_str(item, "created_at")),
            embedding=np.frombuffer(bytes(item["embedding"]["B"]), dtype=np.float32),
            linked_to=_str(item, "linked_to"),
            quality=json.loads(str(_str(item, "quality"))),
            template_count=int(item.get("template_count", {}).get("N", "1")),
        )

    @staticmethod
    def _case(item: dict[str, Any]) -> Case:
        decision = _str(item, "decision")
        return Case(
            case_id=str(_str(item, "case_id")),
            tenant=str(_str(item, "tenant")),
            probe_record_id=str(_str(item, "probe_record_id")),
            kind=Outcome(str(_str(item, "kind"))),
            candidates=candidates_from_json(str(_str(item, "candidates"))),
            status=CaseStatus(str(_str(item, "status"))),
            created_at=str(_str(item, "created_at")),
            thresholds=json.loads(str(_str(item, "thresholds"))),
            decision=CaseDecision(decision) if decision else None,
            decided_by=_str(item, "decided_by"),
            decided_at=_str(item, "decided_at"),
            comment=_str(item, "comment"),
            matched_record_id=_str(item, "matched_record_id"),
            claimed_by=_str(item, "claimed_by"),
            confirmed_by=_str(item, "confirmed_by"),
            confirmed_at=_str(item, "confirmed_at"),
            escalated=bool(item.get("escalated", {}).get("BOOL", False)),
            history=tuple(json.loads(str(_str(item, "history") or "[]"))),
            version=int(item.get("version", {}).get("N", "0")),
        )

    @staticmethod
    def _import_item(item: dict[str, Any]) -> ImportItem:
        return ImportItem(
            key=str(_str(item, "key")),
            tenant=str(_str(item, "tenant")),
            source=str(_str(item, "source")),
            application_id=_str(item, "application_id"),
            content_sha256=str(_str(item, "content_sha256")),
            outcome=Outcome(str(_str(item, "outcome"))),
            created_at=str(_str(item, "created_at")),
            record_id=_str(item, "record_id"),
            case_id=_str(item, "case_id"),
            reason=_str(item, "reason"),
            message=_str(item, "message"),
            candidates=candidates_from_json(str(_str(item, "candidates"))),
            measures=json.loads(str(_str(item, "measures"))),
        )


def _template_count(item: dict[str, Any]) -> int:
    return int(item.get("template_count", {}).get("N", "1"))


def _pack_template_count(item: dict[str, Any], model_pack: str) -> int:
    """How many of the record's listed templates are `model_pack`'s."""
    return sum(1 for t in item.get("templates", {}).get("L", []) if t["M"]["model_pack"]["S"] == model_pack)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
