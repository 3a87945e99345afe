"""The CDK app: `cdk synth` (or `python infra/app.py`) works offline. cdk-nag's AwsSolutions
checks run on every synth; every acknowledged finding carries its reason (nag.py)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aws_cdk as cdk

from face_dedup_infra.config import DeploymentConfig
from face_dedup_infra.nag import apply_nag
from face_dedup_infra.stack import FaceDedupStack


def build_app(
    outdir: str | None = None, context: Mapping[str, object] | None = None
) -> tuple[cdk.App, FaceDedupStack]:
    # cdk.json's context (options and feature flags) applies to every synth, the CLI's and a
    # plain `python app.py` or a test alike; explicit context overrides it.
    defaults = json.loads((Path(__file__).resolve().parent / "cdk.json").read_text(encoding="utf-8"))[
        "context"
    ]
    app = cdk.App(outdir=outdir, context={**defaults, **(context or {})})
    config = DeploymentConfig.from_context(app.node.try_get_context, Path(__file__).resolve().parent)
    stack = FaceDedupStack(
        app,
        "FaceDedup",
        config=config,
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
        ),
    )
    apply_nag(app, stack)
    return app, stack


if __name__ == "__main__":
    # Outside any asset folder (a cdk.out inside one would be copied into itself).
    build_app(str(Path(__file__).resolve().parents[1] / "build" / "cdk.out"))[0].synth()
