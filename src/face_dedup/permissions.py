"""The AWS actions each cloud function needs, read from the adapters' source code.

`face_dedup.wiring` says which port methods a function calls; this module parses each
adapter (stdlib `ast`, nothing imported or run) to find the client calls those methods make,
following calls to the adapter's own helpers, and turns them into IAM actions with botocore's
service models. A new client call in an adapter changes the result here, so the CDK roles built
from it and the deployability test (tests/infra) follow the code, never a hand-kept list.

Resources are named by port (and, for the store, by table role: `store:records`, ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from face_dedup import wiring

SRC = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Adapter:
    path: str  # relative to the package
    cls: str
    service: str  # botocore service name, or "es" for the OpenSearch REST client


EMF = "emf"  # metrics written to the function's own log: no AWS API call, no endpoint
ADAPTERS: dict[str, Adapter] = {
    wiring.INDEX: Adapter("adapters/opensearch_index.py", "OpenSearchVectorIndex", "es"),
    wiring.STORE: Adapter("adapters/dynamodb_store.py", "DynamoRecordStore", "dynamodb"),
    wiring.BLOBS: Adapter("adapters/s3_blobs.py", "S3BlobStore", "s3"),
    wiring.UPLOADS: Adapter("adapters/s3_blobs.py", "S3BlobStore", "s3"),
    wiring.NOTIFIER: Adapter("adapters/sqs_notifier.py", "SqsNotifier", "sqs"),
    wiring.OFFICERS: Adapter("adapters/sns_notifier.py", "SnsNotifier", "sns"),
    wiring.WORKFLOW: Adapter("adapters/step_functions.py", "StepFunctionsStarter", "stepfunctions"),
    wiring.ARCHIVE: Adapter("adapters/s3_blobs.py", "S3BlobStore", "s3"),
    wiring.DRIFT: Adapter("adapters/emf_drift.py", "EmfDriftStore", EMF),
}
# IAM names where they differ from the API operation (IAM's "Actions defined by" tables).
IAM_OVERRIDES = {
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "ListObjectVersions"): ("s3:ListBucketVersions",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject", "s3:DeleteObjectVersion"),  # by VersionId
    ("s3", "HeadObject"): ("s3:GetObject",),
}
IAM_PREFIX = {"stepfunctions": "states"}
# The OpenSearch REST client: method -> HTTP verb (es:ESHttp<Verb> on the domain's paths).
OPENSEARCH_VERBS = {
    "bulk": "Post",
    "search": "Post",
    "count": "Post",
    "indices.exists": "Head",
    "indices.create": "Put",
    "indices.get_mapping": "Get",
}
TRANSACT_KINDS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
READ_VERBS = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "Head", "ESHttpGet", "ESHttpHead")


@dataclass(frozen=True)
class Need:
    """One IAM action on one resource (a port, or `store:<table role>`)."""

    action: str
    resource: str

    @property
    def reads(self) -> bool:
        return self.action.split(":", 1)[1].startswith(READ_VERBS)


@dataclass
class _Method:
    ops: set[str]  # client operations, in the client's spelling (put_object, indices.create)
    helpers: set[str]  # self.<method>() calls
    tables: set[str]  # self._names.<role> references
    keyed: set[tuple[str, str]]  # (IAM action, table) attributed exactly (transact items, TableName=)


def _client_call(node: ast.Call) -> str | None:
    """`self._client.x(...)` -> "x"; `self._client.indices.x(...)` -> "indices.x"; the operation
    named in `get_paginator("op")` / `generate_presigned_url("op", ...)`; `generate_presigned_post`
    is a `put_object`."""
    func = node.func
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not (isinstance(func, ast.Name) and func.id == "self" and parts and parts[-1] == "_client"):
        return None
    path = list(reversed(parts[:-1]))
    if path in (["get_paginator"], ["generate_presigned_url"]) and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    if path == ["generate_presigned_post"]:
        return "put_object"  # a form upload is a PutObject signed by the caller's role
    if path and path[0] == "exceptions":
        return None
    return ".".join(path) if path else None


def _names_ref(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "_names"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    ):
        return node.attr
    return None


def _tables_in(node: ast.AST) -> set[str]:
    return {name for sub in ast.walk(node) if (name := _names_ref(sub))}


def _class(path: str, name: str) -> ast.ClassDef | None:
    tree = ast.parse((SRC / path).read_text(encoding="utf-8"))
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


@cache
def _methods(adapter: Adapter) -> dict[str, _Method]:
    """The adapter class's methods, with those it inherits from its port (ports.py: a port's
    concrete helper methods, such as `search_above`, call the adapter's own methods)."""
    cls = _class(adapter.path, adapter.cls)
    if cls is None:
        raise KeyError(f"{adapter.cls} not found in {adapter.path}")
    found: dict[str, _Method] = {}
    for base in cls.bases:
        port = _class("ports.py", base.id) if isinstance(base, ast.Name) else None
        if port is not None:
            found |= _parse(port)
    return found | _parse(cls)


def _parse(cls: ast.ClassDef) -> dict[str, _Method]:
    found: dict[str, _Method] = {}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        method = _Method(set(), set(), _tables_in(fn), set())
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                op = _client_call(node)
                if op:
                    method.ops.add(op)
                    for kw in node.keywords:
                        table = _names_ref(kw.value) if kw.arg == "TableName" else None
                        if table and op in ("put_item", "update_item", "delete_item"):
                            pascal = "".join(p.capitalize() for p in op.split("_"))
                            method.keyed.add((f"dynamodb:{pascal}", table))
                func = node.func
                if (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "self"
                ):
                    method.helpers.add(func.attr)
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value in TRANSACT_KINDS:
                        for table in _tables_in(value):
                            method.keyed.add((f"dynamodb:{TRANSACT_KINDS[key.value]}", table))
        found[fn.name] = method
    return found


def _closure(methods: dict[str, _Method], name: str) -> _Method:
    seen: set[str] = set()
    total = _Method(set(), set(), set(), set())
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in methods:
            continue
        seen.add(current)
        method = methods[current]
        total.ops |= method.ops
        total.tables |= method.tables
        total.keyed |= method.keyed
        todo += sorted(method.helpers)
    return total


@cache
def _operation_names(service: str) -> dict[str, str]:
    import botocore.session  # botocore ships the service models; nothing is called
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def iam_actions(service: str, op: str) -> tuple[str, ...]:
    """The IAM action(s) one client operation needs."""
    if service == "es":
        if op not in OPENSEARCH_VERBS:
            raise KeyError(f"OpenSearch client call {op!r}: add its HTTP verb to OPENSEARCH_VERBS")
        return (f"es:ESHttp{OPENSEARCH_VERBS[op]}",)
    operation = _operation_names(service).get(op)
    if operation is None:
        raise KeyError(f"{service} has no operation {op!r}")
    if (service, operation) in IAM_OVERRIDES:
        return IAM_OVERRIDES[(service, operation)]
    if operation == "TransactWriteItems":
        return ()  # the items' own actions, attributed per table (see `keyed`)
    return (f"{IAM_PREFIX.get(service, service)}:{operation}",)


# Adapter methods only the deployment runs (the index-setup custom resource, as the domain's
# master user): `ALL` never grants them to a function (the API would otherwise hold HEAD and
# PUT on the domain, to create an index it never creates).
DEPLOY_TIME = frozenset({"ensure_index"})


def public_methods(port: str) -> list[str]:
    return sorted(n for n in _methods(ADAPTERS[port]) if not n.startswith("_") and n not in DEPLOY_TIME)


def needs(spec: wiring.FunctionSpec) -> set[Need]:
    """Every (action, resource) the function's declared port methods perform."""
    found: set[Need] = set()
    for port, declared in spec.uses.items():
        adapter = ADAPTERS[port]
        methods = _methods(adapter)
        names = public_methods(port) if declared == wiring.ALL else list(declared)
        for name in names:
            if name not in methods:
                raise KeyError(f"{adapter.cls} has no method {name!r} (declared for {spec.name})")
            used = _closure(methods, name)
            if port != wiring.STORE:
                found |= {Need(a, port) for op in used.ops for a in iam_actions(adapter.service, op)}
                continue
            found |= {Need(action, f"store:{table}") for action, table in used.keyed}
            exact = {a for a, _ in used.keyed}
            for op in used.ops:
                for action in iam_actions(adapter.service, op):
                    if action in exact or action in (
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                    ):
                        continue  # attributed per table above
                    found |= {Need(action, f"store:{table}") for table in used.tables}
    return found


# Every resource but the index and the workflow is encrypted with the stack's key: using them
# needs the key too (CDK's grant pattern: reads decrypt; writes also generate data keys).
ENCRYPTED = (wiring.STORE, wiring.BLOBS, wiring.UPLOADS, wiring.NOTIFIER, wiring.OFFICERS, wiring.ARCHIVE)
KEY = "key"


def key_needs(found: set[Need]) -> set[Need]:
    encrypted = [n for n in found if n.resource.split(":")[0] in ENCRYPTED]
    if not encrypted:
        return set()
    actions = {"kms:Decrypt"}
    if not all(n.reads for n in encrypted):
        actions |= {"kms:Encrypt", "kms:GenerateDataKey"}
    return {Need(a, KEY) for a in actions}


def services(spec: wiring.FunctionSpec) -> set[str]:
    """The AWS services the function calls (botocore names; "es" for the domain)."""
    return {ADAPTERS[port].service for port in spec.uses} - {EMF}


def iter_all() -> Iterator[tuple[wiring.FunctionSpec, set[Need]]]:
    for spec in wiring.FUNCTIONS.values():
        found = needs(spec)
        yield spec, found | key_needs(found)
