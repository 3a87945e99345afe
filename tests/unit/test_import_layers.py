"""The layers of ARCHITECTURE.md, checked on the import graph of src/face_dedup: no module
imports one in a layer above its own, there is no import cycle, and importing a use case loads
no image, model or cloud library and no settings. Type-only imports (`if TYPE_CHECKING:`) do
not count; imports inside functions do (they are dependencies all the same). The edges that
still break the rule are listed here one by one, each also in ARCHITECTURE.md's "Known
deviations": a new one fails, and so does a fixed one left on the list."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# ARCHITECTURE.md, "Layers": module (or package prefix) -> layer number. Longest prefix wins.
LAYERS: dict[str, int] = {
    # 1. domain, and the standard-library-only declarations beside it
    "face_dedup.domain": 1,
    "face_dedup.errors": 1,
    "face_dedup.identifiers": 1,
    "face_dedup.outcomes": 1,
    "face_dedup.deployment": 1,
    "face_dedup.table_schema": 1,
    "face_dedup.blob_keys": 1,
    "face_dedup.bulk_keys": 1,
    # 2. pure rules (and the MOSIP message formats, pure parsing of outside bytes)
    "face_dedup.decision": 2,
    "face_dedup.calibration": 2,
    "face_dedup.fairness": 2,
    "face_dedup.drift": 2,
    "face_dedup.capacity": 2,
    "face_dedup.synthetic": 2,
    "face_dedup.record_templates": 2,
    "face_dedup.image_format": 2,
    "face_dedup.mosip.messages": 2,
    "face_dedup.mosip.cbeff": 2,
    "face_dedup.mosip.datashare": 2,
    "face_dedup.mosip.crypto": 2,
    # 3. ports and the engine port's result values
    "face_dedup.ports": 3,
    "face_dedup.analysis": 3,
    # 4. use cases
    "face_dedup.usecases": 4,
    "face_dedup.service": 4,
    "face_dedup.queries": 4,
    "face_dedup.importer": 4,
    "face_dedup.bulk": 4,
    "face_dedup.ingest": 4,
    "face_dedup.migration": 4,
    "face_dedup.template_migration": 4,
    "face_dedup.add_template": 4,
    "face_dedup.cloud_migration": 4,
    "face_dedup.cloud_shadow": 4,
    "face_dedup.cloud_bulk": 4,
    "face_dedup.pack_guard": 4,
    "face_dedup.review_sheet": 4,
    "face_dedup.mosip.handlers": 4,
    "face_dedup.mosip.adjudication": 4,
    # 5. adapters
    "face_dedup.adapters": 5,
    # the cloud bulk job's join and decide steps: they run the self-join adapter's arithmetic
    # and put its answers in front of the index the composition root built
    "face_dedup.cloud_bulk_decide": 5,
    "face_dedup.vision": 5,
    "face_dedup.models": 5,
    "face_dedup.mosip.iso_face": 5,
    "face_dedup.mosip.broker": 5,
    "face_dedup.mosip.amazon_mq": 5,
    # 6. composition
    "face_dedup.settings": 6,
    "face_dedup.wiring": 6,
    "face_dedup.permissions": 6,
    "face_dedup.mosip.config": 6,
    "face_dedup.bootstrap": 6,
    # 7. entry points
    "face_dedup": 7,  # the package itself, __main__, cli.py and its subcommands
    "face_dedup.mosip.app": 7,
    "face_dedup.mosip": 1,  # the package's __init__: a docstring
}

# Upward edges that remain (ARCHITECTURE.md, "Known deviations"), importer -> imported (none left).
KNOWN_UPWARD: set[tuple[str, str]] = set()
# Function-level imports that close a loop (none left).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (SRC / "face_dedup").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                node.body = []
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}
        edges: set[str] = set()
        for target in targets:
            while target and target not in files:  # `from pkg import name` names a module or not
                target = target.rpartition(".")[0]
            if target and target != name and target != "face_dedup":
                edges.add(target)
        graph[name] = edges
    return graph


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS and to ARCHITECTURE.md")


def test_no_module_imports_one_above_it() -> None:
    graph = _graph()
    upward = {(a, b) for a, targets in graph.items() for b in targets if _layer(b) > _layer(a)}
    assert upward - KNOWN_UPWARD == set(), "imports up the layers (ARCHITECTURE.md)"
    assert KNOWN_UPWARD - upward == set(), "fixed: take these off KNOWN_UPWARD and ARCHITECTURE.md"


def test_no_import_cycle() -> None:
    graph = _graph()
    # strongly connected components (Tarjan), each of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == KNOWN_CYCLES, sorted(sorted(c) for c in cycles)


USE_CASES = [
    "face_dedup.service",
    "face_dedup.queries",
    "face_dedup.ingest",
    "face_dedup.add_template",
    "face_dedup.decision",
    "face_dedup.outcomes",
    *sorted(f"face_dedup.usecases.{p.stem}" for p in (SRC / "face_dedup" / "usecases").glob("*.py")),
]
HEAVY = (
    "cv2",
    "PIL",
    "onnxruntime",
    "boto3",
    "botocore",
    "face_dedup.settings",
    "face_dedup.vision.pipeline",
)


@pytest.mark.parametrize("module", USE_CASES)
def test_importing_a_use_case_loads_no_image_model_or_cloud_library(module: str) -> None:
    """Transitively, in a fresh interpreter: a direct-import check misses `a -> b -> cv2`."""
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"importing {module} loads {out.stdout.split()}"


ENTRY_POINTS = [
    *sorted((SRC / "face_dedup").glob("*cli.py")),  # cli.py, migration_cli.py, records_cli.py
    *(SRC / "face_dedup" / n for n in ("calibrate.py", "demo.py", "group_report.py", "planner.py")),
    SRC / "face_dedup" / "mosip" / "app.py",
    SRC / "face_dedup" / "mosip" / "adjudication.py",  # `abis-reply` reads through the queries
    *sorted((SRC / "face_dedup_api").glob("*.py")),
    *sorted((ROOT / "functions").glob("*/handler.py")),
]


def test_entry_points_call_no_store_blob_or_index_method_themselves() -> None:
    """They go through a use case (or `queries` for reads), where the tenant and role rules
    are: `x.store.method(` in an entry point is a rule written again, or skipped."""
    import re

    direct = re.compile(r"\.(store|blobs|index)\.[a-z_]+\(")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in ENTRY_POINTS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if direct.search(line)
    ]
    assert found == [], found
