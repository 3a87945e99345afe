"""ARCHITECTURE.md, the newcomer's page, names every module of the core and every function: a
module added without a sentence there fails here, so the page keeps matching the tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_core_module_and_function_is_on_the_page() -> None:
    page = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    core = ROOT / "src" / "face_dedup"
    modules = [p.name for p in core.glob("*.py") if p.stem not in ("__init__", "__main__")]
    packages = [f"{p.name}/" for p in core.iterdir() if (p / "__init__.py").is_file()]
    functions = [p.name for p in (ROOT / "functions").iterdir() if (p / "handler.py").is_file()]
    assert modules and packages and functions
    missing = [name for name in (*modules, *packages, *functions) if name not in page]
    assert not missing, f"ARCHITECTURE.md does not mention {missing}"
