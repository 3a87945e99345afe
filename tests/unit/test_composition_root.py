"""Every entry point gets its adapters from the composition root (bootstrap.py): no handler,
no API module and no CLI command constructs an adapter, creates an AWS client, or reaches for
one of bootstrap's private builders."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = [
    *sorted((ROOT / "functions").glob("*/handler.py")),
    *sorted((ROOT / "src" / "face_dedup_api").glob("*.py")),
    ROOT / "src" / "face_dedup" / "cli.py",
    ROOT / "src" / "face_dedup" / "demo.py",
]


def _adapter_classes() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "face_dedup" / "adapters").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    return names


def _called(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        inner = func.value
        prefix = inner.id + "." if isinstance(inner, ast.Name) else ""
        return prefix + func.attr
    return ""


def test_entry_points_build_no_adapter_and_no_client() -> None:
    adapters = _adapter_classes()
    assert {"SqliteRecordStore", "S3BlobStore", "StepFunctionsStarter", "SqliteDriftStore"} <= adapters
    found: list[str] = []
    for path in ENTRY_POINTS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _called(node)
                if name.split(".")[-1] in adapters or name in (
                    "boto3.client",
                    "boto3.resource",
                    "client_for",
                ):
                    found.append(f"{where}:{node.lineno} calls {name}")
            elif isinstance(node, ast.ImportFrom) and node.module == "face_dedup.bootstrap":
                found += [
                    f"{where}:{node.lineno} imports bootstrap.{a.name}"
                    for a in node.names
                    if a.name[0] == "_"
                ]
    assert found == []
