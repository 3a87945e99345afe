"""Names and schemas declared once: environment variable names and the cloud deployment's fixed
settings in `face_dedup.deployment`, the DynamoDB tables in `face_dedup.table_schema`. Settings,
the CDK app, the adapter and the emulated-AWS test use them; none spells its own copy. Both
modules are standard library only, so importing the CDK app loads no runtime (numpy, OpenCV,
boto3, the DynamoDB adapter)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from face_dedup import deployment, table_schema
from face_dedup.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))  # the CDK app's package, as the other infra tests
RUNTIME = ("numpy", "cv2", "PIL", "onnxruntime", "boto3", "face_dedup.adapters.dynamodb_store")


def _loaded_after(module: str, cwd: Path) -> list[str]:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        f"print(json.dumps([m for m in {list(RUNTIME)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'infra'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["face_dedup.deployment", "face_dedup.table_schema"])
def test_the_declarations_need_nothing_but_the_standard_library(module: str) -> None:
    tree = ast.parse((ROOT / "src" / Path(*module.split("."))).with_suffix(".py").read_text(encoding="utf-8"))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "dataclasses", "pathlib", "typing"}


def test_importing_the_cdk_app_loads_no_runtime() -> None:
    # The stack and every construct, as `cdk synth` imports them (building and synthesizing
    # them: test_synthesizing_the_stack_loads_no_runtime below).
    hint = (
        "a construct imports a runtime module: keep what the CDK app shares with the runtime in "
        "standard-library-only modules (deployment.py, table_schema.py, wiring.py, capacity.py) "
        "or import the runtime module inside the function that needs it at synth"
    )
    assert _loaded_after("face_dedup_infra.stack", ROOT / "infra") == [], hint
    assert _loaded_after("face_dedup_infra.constructs.tables", ROOT / "infra") == [], hint


def test_synthesizing_the_stack_loads_no_runtime() -> None:
    """Building and synthesizing the whole app, as `cdk synth` does: staging the capture page's
    detector used to load Settings, and with it numpy and OpenCV (Settings' decode and quality
    limits live in vision/)."""
    code = (
        "import json, sys, tempfile\n"
        "from app import build_app\n"
        "app, _ = build_app(tempfile.mkdtemp())\n"
        "app.synth()\n"
        f"print(json.dumps([m for m in {[*RUNTIME, 'face_dedup.settings']!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "infra",
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'infra'}"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_adapter_and_the_construct_share_one_schema() -> None:
    from face_dedup.adapters import dynamodb_store
    from face_dedup_infra.constructs import tables

    construct = vars(tables)  # the names the construct module uses (imported, not re-exported)
    assert dynamodb_store.TABLES is table_schema.TABLES is construct["TABLES"]
    assert dynamodb_store.TableNames is table_schema.TableNames
    assert construct["STAGED_TTL_ATTRIBUTE"] == dynamodb_store.STAGED_TTL_ATTRIBUTE
    assert set(table_schema.TABLES) == set(table_schema.ROLES)
    # every table role is a setting the stack can fill with CloudFormation's name
    assert {f"table_{role}" for role in table_schema.ROLES} <= set(Settings.__dataclass_fields__)


def test_every_setting_is_read_from_its_declared_name() -> None:
    fields = [f for f in Settings.__dataclass_fields__ if f not in ("quality", "decode")]
    environ = {deployment.env_name(f): "x" for f in fields}
    assert all(name.startswith(deployment.PREFIX) for name in environ)
    settings = Settings.load({deployment.env_name("tenant"): "t-7", deployment.env_name("s3_bucket"): "b"})
    assert (settings.tenant, settings.s3_bucket) == ("t-7", "b")
    assert set(deployment.CLOUD_SETTINGS) <= set(fields)
    cloud = Settings.load(deployment.environment(dict(deployment.CLOUD_SETTINGS)))
    assert (cloud.index_backend, cloud.store_backend, cloud.blob_backend) == ("opensearch", "dynamodb", "s3")
    assert Settings.__dataclass_fields__["s3_prefix"].default == deployment.FACES_PREFIX


def _literals(path: Path) -> list[str]:
    """String constants naming a FACE_DEDUP_ variable (docstrings and comments aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(deployment.PREFIX)
        and id(node) not in docstrings
    ]


def test_no_entry_point_or_construct_spells_a_variable_name_itself() -> None:
    sources = [
        *sorted((ROOT / "infra").rglob("*.py")),
        *sorted((ROOT / "functions").rglob("*.py")),
        ROOT / "src" / "face_dedup" / "settings.py",
        ROOT / "tests" / "e2e" / "test_serverless_on_moto.py",
    ]
    spelled = {str(p.relative_to(ROOT)): found for p in sources if (found := _literals(p))}
    assert spelled == {}


def test_the_stack_gives_each_function_the_deployment_settings(template: dict[str, Any]) -> None:
    from face_dedup import wiring
    from tests.infra.test_deployability import functions_by_name

    by_name = functions_by_name(template)
    assert by_name
    for name, (_, function) in by_name.items():
        env = function["Properties"]["Environment"]["Variables"]
        declared = wiring.settings_for(wiring.FUNCTIONS[name])
        for setting, value in deployment.CLOUD_SETTINGS.items():
            if setting in declared:
                assert env[deployment.env_name(setting)] == value, (name, setting)
        assert env[deployment.FUNCTION_ENV] == name


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("declared-once")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    _, stack = build_app(str(tmp / "cdk.out"), {"face-dedup:layers-dir": str(tmp / "layers")})
    return dict(Template.from_stack(stack).to_json())
