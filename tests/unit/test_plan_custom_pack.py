"""`face-dedup plan` sees a pack added with `face-dedup models add`: refused, naming the fix,
until it has a calibration; then planned from the registry's own calibration and genuine curve
of that pack (the active pack, or `--pack` while another one serves). The calibration here is
the shipped SFace measurement relabelled for the added pack (the worked example IS the SFace
file), so the plan must equal the shipped pack's, figure for figure; measuring one from
labelled photos is tests/unit/test_custom_pack.py's end-to-end test."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from face_dedup.cli import app
from face_dedup.models.custom import add_pack
from face_dedup.planner import genuine_path
from face_dedup.settings import Settings
from tests.unit.test_custom_pack import models_dir, pack_folder  # noqa: F401 - fixtures

SHIPPED = "yunet-sface-v1"


def _plan(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["plan", "10000", "1000000", "--json", *args], env=env)


def _relabelled(name: str, pack: str) -> str:
    raw = json.loads(resources.files("face_dedup.models").joinpath(name).read_text(encoding="utf-8"))
    raw["model_pack"] = pack
    return json.dumps(raw)


def test_plan_uses_an_added_packs_own_calibration(
    base_settings: Settings,
    models_dir: Path,  # noqa: F811
    pack_folder: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    add_pack(pack_folder, models_dir)
    data = tmp_path / "registry"
    data.mkdir()
    env = {"FACE_DEDUP_MODELS_DIR": str(models_dir), "FACE_DEDUP_DATA_DIR": str(data)}

    # not calibrated yet: refused with the fix named (before: "unknown model pack")
    refused = _plan(env | {"FACE_DEDUP_MODEL_PACK": "my-sface"})
    assert refused.exit_code != 0
    assert "no calibration yet" in refused.output and "unknown model pack" not in refused.output

    (data / "calibration").mkdir()
    (data / "calibration" / "my-sface.json").write_text(
        _relabelled(f"calibration_{SHIPPED}.json", "my-sface")
    )
    genuine_path(data, "my-sface").write_text(_relabelled(f"genuine_{SHIPPED}.json", "my-sface"))

    shipped = _plan(env | {"FACE_DEDUP_MODEL_PACK": SHIPPED})
    assert shipped.exit_code == 0, shipped.output
    for planned in (
        _plan(env | {"FACE_DEDUP_MODEL_PACK": "my-sface"}),  # the registry runs the added pack
        _plan(env | {"FACE_DEDUP_MODEL_PACK": SHIPPED}, "--pack", "my-sface"),  # before migrating to it
    ):
        assert planned.exit_code == 0, planned.output
        mine, theirs = json.loads(planned.output), json.loads(shipped.output)
        assert mine["model_pack"] == "my-sface" and theirs["model_pack"] == SHIPPED
        assert {k: v for k, v in mine.items() if k != "model_pack"} == {
            k: v for k, v in theirs.items() if k != "model_pack"
        }
    unknown = _plan(env, "--pack", "no-such-pack")
    assert unknown.exit_code != 0 and "unknown model pack" in unknown.output
