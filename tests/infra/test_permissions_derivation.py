"""`face_dedup.permissions` reads each adapter's AWS calls from its source, but it only sees
`self._client.<operation>(...)` (and `self._client.indices.<op>`, paginators, presigned
URLs) and follows `self.<helper>()`. A call made any other way would be invisible to it: the
CDK role would lack the action, and the deployability test, built from the same reading, would
not notice. This guard makes such code fail the build instead:

- the client escaping that form: `client = self._client`, `getattr(self._client, name)`,
  `helper(self._client)`, `self._client.transport.perform_request(...)`;
- dynamic dispatch to the adapter's own methods (`getattr(self, name)`), which the helper
  walk cannot follow;
- a second client under another attribute (`self._s3.put_object(...)`).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from face_dedup import permissions

ALLOWED_TAILS = {"exceptions"}  # `except self._client.exceptions.X`: not a call


def escapes(cls: ast.ClassDef, service: str) -> list[str]:
    """Every place in the class where the AWS client is used in a way permissions.py cannot
    read (line: source)."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(cls):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    operations = set(_operations(service))
    found: list[str] = []

    def where(node: ast.AST) -> str:
        return f"line {getattr(node, 'lineno', '?')}: {ast.unparse(node)}"

    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and node.attr == "_client" and _is_self(node.value):
            parent = parents.get(node)
            # allowed: self._client.op(...), self._client.indices.op(...), self._client.exceptions.X
            if isinstance(parent, ast.Attribute):
                if parent.attr in ALLOWED_TAILS:
                    continue
                outer = parents.get(parent)
                if isinstance(outer, ast.Call) and outer.func is parent:
                    continue
                if (
                    service == "es"
                    and parent.attr == "indices"
                    and isinstance(outer, ast.Attribute)
                    and isinstance(parents.get(outer), ast.Call)
                    and parents[outer].func is outer  # type: ignore[attr-defined]
                ):
                    continue
            if isinstance(parent, ast.Assign) and node in parent.targets:
                continue  # the constructor storing it
            found.append(where(parent or node))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and node.args
            and (_is_self(node.args[0]) or _is_client(node.args[0]))
        ):
            found.append(where(node))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in operations
            and not _is_client(node.func.value)
            and not _is_self(node.func.value)
        ):
            found.append(where(node))
    return found


def _operations(service: str) -> dict[str, str]:
    """The SDK's operation names (none for the OpenSearch client, or a port with no AWS API)."""
    from botocore.exceptions import UnknownServiceError

    try:
        return permissions._operation_names(service)
    except UnknownServiceError:
        return {}


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_client(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "_client" and _is_self(node.value)


def _adapter_classes() -> list[tuple[str, ast.ClassDef, str]]:
    seen = {}
    for adapter in permissions.ADAPTERS.values():
        cls = permissions._class(adapter.path, adapter.cls)
        assert cls is not None, adapter
        seen[(adapter.path, adapter.cls)] = (f"{adapter.path}:{adapter.cls}", cls, adapter.service)
    return list(seen.values())


@pytest.mark.parametrize(
    ("name", "cls", "service"), _adapter_classes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_adapter_calls_aws_only_in_the_form_permissions_reads(
    name: str, cls: ast.ClassDef, service: str
) -> None:
    assert escapes(cls, service) == [], name


def _class_of(source: str) -> ast.ClassDef:
    node = ast.parse(textwrap.dedent(source)).body[0]
    assert isinstance(node, ast.ClassDef)
    return node


@pytest.mark.parametrize(
    "body",
    [
        "client = self._client\n        client.delete_object(Bucket=b, Key=k)",
        "getattr(self._client, 'delete_' + 'object')(Bucket=b, Key=k)",
        "_delete(self._client, b, k)",
        "getattr(self, '_remove')(k)",
        "self._other.delete_object(Bucket=b, Key=k)",
    ],
)
def test_a_call_permissions_cannot_see_fails_the_guard(body: str) -> None:
    source = f"""
    class S3BlobStore:
        def __init__(self, client):
            self._client = client

        def delete(self, b, k):
            {body}
    """
    assert escapes(_class_of(source), "s3"), body


def test_the_forms_permissions_reads_pass_the_guard_and_are_derived(tmp_path: Path) -> None:
    source = """
    class S3BlobStore:
        def __init__(self, client):
            self._client = client

        def delete(self, b, k):
            try:
                self._remove(b, k)
            except self._client.exceptions.NoSuchKey:
                pass

        def _remove(self, b, k):
            paginator = self._client.get_paginator("list_object_versions")
            self._client.delete_objects(Bucket=b, Delete={"Objects": []})
    """
    cls = _class_of(source)
    assert escapes(cls, "s3") == []
    methods = permissions._parse(cls)
    ops = permissions._closure(methods, "delete").ops
    assert ops == {"list_object_versions", "delete_objects"}


def test_every_method_never_includes_what_only_the_deployment_runs() -> None:
    from face_dedup import wiring

    setup = wiring.FunctionSpec("probe", "h", "d", {wiring.INDEX: ("ensure_index",)})
    # HEAD and PUT to create the index; GET reads an existing one's mapping (refused if graphless).
    assert {n.action for n in permissions.needs(setup)} == {"es:ESHttpHead", "es:ESHttpPut", "es:ESHttpGet"}
    api = permissions.needs(wiring.FUNCTIONS["api"])
    assert {n.action for n in api if n.resource == wiring.INDEX} == {"es:ESHttpPost"}
