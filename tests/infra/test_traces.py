"""No application id, upload key or file name reaches X-Ray.

Powertools' Tracer patches botocore, requests, httpx and sqlite3 by default: X-Ray then
records every S3 call's `Key` (aws_xray_sdk's parameter whitelist) and every HTTP call's URL,
and upload keys are `selfies/<tenant>/<application_id>/<file>`. Each handler's Tracer is
built with `auto_patch=False`: traces keep the handler segment, its duration and errors only.
Checked in a fresh process that looks like Lambda (LAMBDA_TASK_ROOT set: tracing on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from face_dedup import wiring

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib, json, sys
sys.path.insert(0, ".")
from aws_xray_sdk.core import patcher
for name in sys.argv[1:]:
    importlib.import_module(f"functions.{name}.handler")
print(json.dumps(sorted(patcher._PATCHED_MODULES)))
"""


def test_no_handler_patches_the_sdks_that_would_record_keys_in_traces() -> None:
    code_dirs = sorted(
        {spec.code_dir for spec in (*wiring.FUNCTIONS.values(), *wiring.OPTIONAL_FUNCTIONS.values())}
    )
    env = {**os.environ, "LAMBDA_TASK_ROOT": "/var/task", "AWS_DEFAULT_REGION": "eu-west-1"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *code_dirs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
