"""ARCHITECTURE.md, the newcomer's page, names every module of the core and every function: a
module added without a sentence there fails here, so the page keeps matching the tree."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_core_module_and_function_is_on_the_page() -> None:
    page = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    core = ROOT / "src" / "face_dedup"
    modules = [p.name for p in core.glob("*.py") if p.stem not in ("__init__", "__main__")]
    packages = [f"{p.name}/" for p in core.iterdir() if (p / "__init__.py").is_file()]
    functions = [p.name for p in (ROOT / "functions").iterdir() if (p / "handler.py").is_file()]
    # the packages' modules too (adapters/, vision/, models/, mosip/, usecases/) and the API's
    inner = [
        p.name
        for folder in (*(core / name.rstrip("/") for name in packages), ROOT / "src" / "face_dedup_api")
        for p in folder.glob("*.py")
        if p.stem != "__init__"
    ]
    assert modules and packages and functions and inner
    missing = [name for name in (*modules, *packages, *functions, *inner) if name not in page]
    assert not missing, f"ARCHITECTURE.md does not mention {missing}"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _runtime_imports(path: Path) -> set[str]:
    """As `_imports`, less what an `if TYPE_CHECKING:` block names (types only, never loaded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


FORBIDDEN_IN_CORE = ("cv2", "PIL", "boto3", "botocore")


def test_every_use_case_module_imports_no_settings_image_or_cloud_library() -> None:
    core = ROOT / "src" / "face_dedup"
    use_cases = sorted((core / "usecases").glob("*.py"))
    assert {p.stem for p in use_cases} >= {"enrollment", "review", "case_rules", "erasure", "config"}
    for path in [*use_cases, core / "decision.py", core / "outcomes.py"]:
        imported = _imports(path)
        bad = {m for m in imported if m.split(".")[0] in FORBIDDEN_IN_CORE or m == "face_dedup.settings"}
        assert not bad, f"{path.name} imports {bad}"
        # the facade sits above the use cases: importing it back would be a cycle
        assert "face_dedup.service" not in imported, path.name
    # the facade only names Settings for the type checker (what entry points read back)
    facade = _runtime_imports(core / "service.py")
    assert not {m for m in facade if m.split(".")[0] in FORBIDDEN_IN_CORE or m == "face_dedup.settings"}
    # the state machine's choices are generated from outcomes.py at synth: it must not need numpy
    assert _imports(core / "outcomes.py") <= {"__future__", "enum"}


def test_the_use_cases_touch_no_image_or_cloud_library_and_the_sheet_does_not_import_them() -> None:
    core = ROOT / "src" / "face_dedup"
    service = _imports(core / "service.py")
    assert not {m for m in service if m.split(".")[0] in ("cv2", "PIL", "boto3", "botocore")}
    # The review sheet renders what the service hands it: importing the service back was a cycle.
    assert "face_dedup.service" not in _imports(core / "review_sheet.py")
