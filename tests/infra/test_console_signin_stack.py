"""The console's hosted-UI sign-in as deployed: with `callback-urls` in context the user pool
gets a hosted-UI domain, the console client allows the code flow only to those URLs, and the
console bucket receives /static/console-config.json built from the deployed domain and client
(signin.js reads it; tests/unit/test_console_signin.py runs that flow)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))

CALLBACKS = "https://console.registry.example/v1/,https://backup.registry.example/v1/"


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("signin")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    app, stack = build_app(
        str(tmp / "cdk.out"),
        {"face-dedup:layers-dir": str(tmp / "layers"), "face-dedup:callback-urls": CALLBACKS},
    )
    app.synth()  # cdk-nag: any unacknowledged finding raises here
    return stack, dict(Template.from_stack(stack).to_json())


@pytest.fixture(scope="module")
def template(synthesized: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    return synthesized[1]


def _of(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_hosted_ui_code_flow_only_to_the_listed_callbacks(template: dict[str, Any]) -> None:
    (client,) = _of(template, "AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert props["AllowedOAuthFlows"] == ["code"] and props["AllowedOAuthFlowsUserPoolClient"] is True
    assert props["CallbackURLs"] == CALLBACKS.split(",")
    assert "GenerateSecret" not in props or props["GenerateSecret"] is False  # public client: PKCE
    assert props["PreventUserExistenceErrors"] == "ENABLED"
    assert len(_of(template, "AWS::Cognito::UserPoolDomain")) == 1


def test_console_config_names_the_deployed_domain_and_client(template: dict[str, Any]) -> None:
    (client_id,) = _of(template, "AWS::Cognito::UserPoolClient")
    (domain_id,) = _of(template, "AWS::Cognito::UserPoolDomain")
    deployments = [
        d for d in _of(template, "Custom::CDKBucketDeployment").values() if "SourceMarkers" in d["Properties"]
    ]
    markers = json.dumps([d["Properties"]["SourceMarkers"] for d in deployments])
    assert f'"Ref": "{client_id}"' in markers and f'"Ref": "{domain_id}"' in markers


def test_console_policy_lets_the_page_reach_the_hosted_ui_token_endpoint(
    synthesized: tuple[Any, dict[str, Any]],
) -> None:
    """signin.js exchanges the code at the hosted UI's token endpoint: the deployed page's CSP
    must allow that one origin for connect-src, and nothing broader."""
    stack, template = synthesized
    (domain_id,) = _of(template, "AWS::Cognito::UserPoolDomain")
    page = json.dumps(stack.resolve(stack.review.console_page()))
    connect = page[page.index("connect-src") :].split(";")[0]
    assert "'self'" in connect and domain_id in connect
    assert "https:" not in connect.replace("https://", "")
