"""cdk.json sets every feature flag the installed aws-cdk-lib recommends, at its recommended
value (what `cdk init` writes for this version): without them CDK keeps legacy defaults from
older releases. A CDK upgrade that recommends a new flag fails here until cdk.json has it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import aws_cdk

CDK_JSON = Path(__file__).resolve().parents[2] / "infra" / "cdk.json"


def recommended() -> dict[str, object]:
    # aws-cdk-lib ships the list beside its code (package/recommended-feature-flags.json)
    (bundle,) = (Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        flags: dict[str, object] = json.load(member)
    return flags


def test_cdk_json_sets_every_recommended_feature_flag() -> None:
    flags = recommended()
    assert len(flags) > 50  # the list was read, not an empty file
    context = json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]
    missing = sorted(k for k in flags if k not in context)
    different = sorted(k for k in flags if k in context and context[k] != flags[k])
    assert (missing, different) == ([], [])
