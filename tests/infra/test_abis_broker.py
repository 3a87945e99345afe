"""The optional MOSIP ABIS on Amazon MQ (context `face-dedup:mosip-abis=true`), checked in the
synthesized template as tests/infra/test_deployability.py checks every default function: the
role allows what the abis function's declared port methods perform (face_dedup.wiring +
face_dedup.permissions) and what Lambda's Amazon MQ event source mapping needs, nothing that
writes beyond that; it runs in the VPC with an endpoint for each service it (or the mapping)
calls; its settings are in its environment; one request at a time. Each fault, reintroduced,
makes the check fail."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from face_dedup import permissions, wiring
from face_dedup.deployment import PREFIX
from face_dedup.mosip.config import AbisConfig
from tests.infra.test_deployability import (
    ENDPOINT_NAME,
    RESOURCE_KINDS,
    RESOURCE_PREFIX,
    _listed,
    _logical,
    _of,
    allows,
    allows_action,
    functions_by_name,
    statements,
)

SPEC = wiring.OPTIONAL_FUNCTIONS[wiring.ABIS]
ESM_ENDPOINTS = ("secretsmanager", "sts", "lambda")
ABIS_ENV = ("BROKER_URL", "BROKER_SECRET_ARN", "REQUEST_QUEUE", "RESPONSE_QUEUE", "TENANT")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("abis")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    context = {"face-dedup:layers-dir": str(tmp / "layers"), "face-dedup:mosip-abis": "true"}
    _, stack = build_app(str(tmp / "cdk.out"), context)
    return dict(Template.from_stack(stack).to_json())


def _one(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = list(_of(template, kind).items())
    assert len(found) == 1, (kind, [k for k, _ in found])
    return found[0]


def _mapping(template: dict[str, Any]) -> dict[str, Any]:
    broker = _one(template, "AWS::AmazonMQ::Broker")[0]
    found = [
        m
        for m in _of(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [broker, "Arn"]}
    ]
    return found[0] if found else {}


def abis_problems(template: dict[str, Any]) -> list[str]:
    """Everything that would stop the ABIS working as deployed; empty when it would work."""
    found: list[str] = []
    functions = functions_by_name(template)
    if SPEC.name not in functions:
        return ["abis: no function"]
    logical, fn = functions[SPEC.name]
    props = fn["Properties"]
    granted = statements(template, props["Role"]["Fn::GetAtt"][0])
    ids = {need: _logical(prefix, template, RESOURCE_KINDS) for need, prefix in RESOURCE_PREFIX.items()}
    needs = permissions.needs(SPEC)
    needs |= permissions.key_needs(needs)
    # 1. what its adapters' code performs, on the right resource
    for need in sorted(needs, key=lambda n: (n.resource, n.action)):
        if not allows(granted, need.action, ids[need.resource]):
            found.append(f"abis: role lacks {need.action} on {need.resource}")
    # 2. nothing that writes or deletes beyond that
    for statement in granted:
        for action in _listed(statement["Action"]):
            if action.split(":")[1].startswith(permissions.READ_VERBS) or action.startswith(
                ("xray:", "logs:")
            ):
                continue
            for resource, rid in ids.items():
                if (
                    resource != permissions.KEY
                    and f'"{rid}"' in json.dumps(statement["Resource"])
                    and permissions.Need(action, resource) not in needs
                ):
                    found.append(f"abis: role allows {action} on {resource}, which it never calls")
    # 3. what the Amazon MQ event source mapping needs (Lambda checks it when the mapping starts)
    broker = _one(template, "AWS::AmazonMQ::Broker")[0]
    secret = _one(template, "AWS::SecretsManager::Secret")[0]
    if not allows(granted, "mq:DescribeBroker", broker):
        found.append("abis: role lacks mq:DescribeBroker on the broker")
    if not allows(granted, "secretsmanager:GetSecretValue", secret):
        found.append("abis: role lacks secretsmanager:GetSecretValue on the broker secret")
    for action in (
        "ec2:CreateNetworkInterface",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
    ):
        if not allows_action(granted, action):
            found.append(f"abis: role lacks {action} (the mapping's network interfaces)")
    # 4. network: in the VPC (the index, the private broker); endpoints for what it and the mapping call
    if "VpcConfig" not in props:
        found.append("abis: runs outside the VPC")
    endpoints = [
        json.dumps(e["Properties"]["ServiceName"]) for e in _of(template, "AWS::EC2::VPCEndpoint").values()
    ]
    for service in sorted((permissions.services(SPEC) - {"es"}) | set(ESM_ENDPOINTS)):
        name = ENDPOINT_NAME.get(service, service)
        if not any(f'.{name}"' in e for e in endpoints):
            found.append(f"abis: in the VPC without an endpoint for {service}")
    # 5. its settings
    env = props.get("Environment", {}).get("Variables", {})
    for setting in wiring.settings_for(SPEC):
        if PREFIX + setting.upper() not in env:
            found.append(f"abis: setting {setting} missing from its environment")
    for name in ABIS_ENV:
        if "FACE_DEDUP_ABIS_" + name not in env:
            found.append(f"abis: FACE_DEDUP_ABIS_{name} missing from its environment")
    # 6. one request at a time, from the request queue the ABIS settings name
    mapping = _mapping(template)
    if not mapping:
        found.append("abis: no event source mapping on the broker")
    else:
        mp = mapping["Properties"]
        if mp.get("BatchSize") != 1:
            found.append("abis: batch size is not 1")
        if mp.get("Queues") != [env.get("FACE_DEDUP_ABIS_REQUEST_QUEUE")]:
            found.append("abis: the mapping reads another queue than the function's settings name")
        if mp.get("FunctionName") != {"Ref": logical}:
            found.append("abis: the mapping invokes another function")
        if {"Type": "BASIC_AUTH", "URI": {"Ref": secret}} not in mp.get("SourceAccessConfigurations", []):
            found.append("abis: the mapping does not authenticate with the broker secret")
    if props.get("ReservedConcurrentExecutions") != 1:
        found.append("abis: more than one request at a time (an Identify could overtake its Inserts)")
    # 7. the index: its role mapped for writes, admitted by the domain's policy
    setup = json.dumps(
        [
            r["Properties"].get("WriteRoleArns")
            for r in _of(template, "AWS::CloudFormation::CustomResource").values()
        ]
    )
    role = props["Role"]["Fn::GetAtt"][0]
    if f'"{role}"' not in setup:
        found.append("abis: its role is not mapped to the index's write role")
    # (CDK sets the domain's access policy through a custom resource: updateDomainConfig)
    policy = json.dumps([r["Properties"] for r in _of(template, "Custom::OpenSearchAccessPolicy").values()])
    if f'"{role}"' not in policy:
        found.append("abis: its role is not admitted by the domain's access policy")
    # 8. the broker: private, the stack's key, logs on, its password never in the template
    bp = _one(template, "AWS::AmazonMQ::Broker")[1]["Properties"]
    if bp.get("PubliclyAccessible") is not False:
        found.append("broker: publicly accessible")
    if bp.get("EncryptionOptions", {}).get("UseAwsOwnedKey") is not False or ids[
        permissions.KEY
    ] not in json.dumps(bp.get("EncryptionOptions", {})):
        found.append("broker: not encrypted with the stack's key")
    if bp.get("Logs") != {"Audit": True, "General": True}:
        found.append("broker: logs off")
    if any("{{resolve:secretsmanager:" not in json.dumps(u["Password"]) for u in bp.get("Users", [])):
        found.append("broker: a password in the template")
    # 9. a request in the dead-letter queue tells the operators
    broker_name = bp.get("BrokerName")
    operations = _logical("NotificationsOperations", template, ("AWS::SNS::Topic",))
    dlq = f"DLQ.{env.get('FACE_DEDUP_ABIS_REQUEST_QUEUE')}"
    if not any(
        a["Properties"].get("Namespace") == "AWS/AmazonMQ"
        and {"Name": "Queue", "Value": dlq} in a["Properties"].get("Dimensions", [])
        and {"Name": "Broker", "Value": broker_name} in a["Properties"].get("Dimensions", [])
        and f'"{operations}"' in json.dumps(a["Properties"].get("AlarmActions", []))
        for a in _of(template, "AWS::CloudWatch::Alarm").values()
    ):
        found.append("abis: no alarm to the operations topic on the dead-letter queue")
    return found


def test_the_abis_stack_is_deployable(template: dict[str, Any]) -> None:
    assert abis_problems(template) == []


def test_the_broker_and_its_mapping_as_synthesized(template: dict[str, Any]) -> None:
    props = _one(template, "AWS::AmazonMQ::Broker")[1]["Properties"]
    assert (props["EngineType"], props["DeploymentMode"], len(props["SubnetIds"])) == (
        "ACTIVEMQ",
        "SINGLE_INSTANCE",
        1,
    )
    assert _mapping(template)["Properties"]["Queues"] == [AbisConfig().request_queue]
    # failed requests are kept in DLQ.<queue> (the broker configuration), never dropped
    import base64

    config = base64.b64decode(
        _one(template, "AWS::AmazonMQ::Configuration")[1]["Properties"]["Data"]
    ).decode()
    assert 'individualDeadLetterStrategy queuePrefix="DLQ."' in config


def test_the_construct_defaults_are_the_abis_settings_defaults() -> None:
    from face_dedup_infra.constructs import abis_broker

    defaults = AbisConfig()
    assert (
        defaults.request_queue,
        defaults.response_queue,
        defaults.tenant,
    ) == (abis_broker.REQUEST_QUEUE, abis_broker.RESPONSE_QUEUE, abis_broker.TENANT)
    assert not abis_broker.AbisOptions.from_context(lambda _: None).enabled  # off unless asked
    options = abis_broker.AbisOptions.from_context(
        {"face-dedup:mosip-abis": True, "face-dedup:mosip-abis-deployment": "active-standby"}.get
    )
    assert options.enabled and options.active_standby
    with pytest.raises(ValueError):
        abis_broker.AbisOptions.from_context({"face-dedup:mosip-abis-deployment": "cluster"}.get)


def _abis(t: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = functions_by_name(t)[SPEC.name][1]["Properties"]
    return props


def _drop_action(action: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        for s in statements(t, _abis(t)["Role"]["Fn::GetAtt"][0]):
            s["Action"] = [a for a in _listed(s["Action"]) if a != action] or ["none:None"]

    return mutate


def _drop_endpoint(service: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        for k, v in list(_of(t, "AWS::EC2::VPCEndpoint").items()):
            if f'.{service}"' in json.dumps(v["Properties"]["ServiceName"]):
                del t["Resources"][k]

    return mutate


def _grant_write(t: dict[str, Any]) -> None:
    role = _abis(t)["Role"]["Fn::GetAtt"][0]
    rid = _logical("CaseNotificationsQueue", t, RESOURCE_KINDS)  # the ABIS notifies nobody
    t["Resources"]["Injected"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "Roles": [{"Ref": role}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "sqs:SendMessage",
                        "Resource": {"Fn::GetAtt": [rid, "Arn"]},
                    }
                ]
            },
        },
    }


FAULTS: dict[str, Callable[[dict[str, Any]], object]] = {  # each edits the template in place
    "no secret permission": _drop_action("secretsmanager:GetSecretValue"),
    "no mq:DescribeBroker": _drop_action("mq:DescribeBroker"),
    "no ec2:DescribeVpcs": _drop_action("ec2:DescribeVpcs"),
    "no index search": _drop_action("es:ESHttpPost"),
    "no store writes": _drop_action("dynamodb:PutItem"),
    "a write it never makes": _grant_write,
    "outside the VPC": lambda t: _abis(t).pop("VpcConfig"),
    "no Secrets Manager endpoint": _drop_endpoint("secretsmanager"),
    "no STS endpoint": _drop_endpoint("sts"),
    "no secret ARN in the environment": lambda t: _abis(t)["Environment"]["Variables"].pop(
        "FACE_DEDUP_ABIS_BROKER_SECRET_ARN"
    ),
    "batches of 10": lambda t: _mapping(t)["Properties"].update(BatchSize=10),
    "another queue": lambda t: _mapping(t)["Properties"].update(Queues=["mosip-to-abis-old"]),
    "unbounded concurrency": lambda t: _abis(t).pop("ReservedConcurrentExecutions"),
    "public broker": lambda t: _one(t, "AWS::AmazonMQ::Broker")[1]["Properties"].update(
        PubliclyAccessible=True
    ),
    "no dead-letter alarm": lambda t: [
        t["Resources"].pop(k)
        for k, v in list(_of(t, "AWS::CloudWatch::Alarm").items())
        if v["Properties"].get("Namespace") == "AWS/AmazonMQ"
    ],
    "plaintext password": lambda t: _one(t, "AWS::AmazonMQ::Broker")[1]["Properties"]["Users"][0].update(
        Password="hunter2hunter2"
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_reintroduced_fails_the_check(template: dict[str, Any], fault: str) -> None:
    broken = copy.deepcopy(template)
    FAULTS[fault](broken)
    assert abis_problems(broken), fault


def test_the_sample_event_and_function_code_exist() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "functions" / SPEC.code_dir / "handler.py").is_file()
    assert (root / "events" / "abis" / "insert-via-amazon-mq.json").is_file()


def test_cfn_lint_finds_nothing_in_the_abis_resources(template: dict[str, Any], tmp_path: Path) -> None:
    """The broker, its configuration, the secret and the mapping as CloudFormation reads them
    (cfn-lint knows each property's type and allowed values)."""
    import re
    import shutil
    import subprocess
    import sys

    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    if cfn_lint is None:
        pytest.skip("cfn-lint is not installed (a dev extra)")
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    result = subprocess.run(
        [cfn_lint, "--format", "parseable", str(path)], capture_output=True, text=True, check=False
    )
    rules = set(re.findall(r":([EWI]\d{4}):", result.stdout))
    assert rules <= {"W3005"}, result.stdout  # W3005: CDK's redundant DependsOn, as in the default stack


@pytest.mark.slow
def test_active_standby_puts_two_brokers_in_two_zones(tmp_path: Path) -> None:
    from aws_cdk.assertions import Template

    from app import build_app

    for name in ("runtime", "models"):
        (tmp_path / "layers" / name).mkdir(parents=True)
        (tmp_path / "layers" / name / "README").write_text("placeholder\n")
    context = {
        "face-dedup:layers-dir": str(tmp_path / "layers"),
        "face-dedup:mosip-abis": "true",
        "face-dedup:mosip-abis-deployment": "active-standby",
    }
    _, stack = build_app(str(tmp_path / "cdk.out"), context)
    t = dict(Template.from_stack(stack).to_json())
    props = _one(t, "AWS::AmazonMQ::Broker")[1]["Properties"]
    assert props["DeploymentMode"] == "ACTIVE_STANDBY_MULTI_AZ"
    assert len({json.dumps(s) for s in props["SubnetIds"]}) == 2
    # the function gets every STOMP endpoint (both instances), comma-joined
    env = _abis(t)["Environment"]["Variables"]
    broker = _one(t, "AWS::AmazonMQ::Broker")[0]
    assert env["FACE_DEDUP_ABIS_BROKER_URL"] == {
        "Fn::Join": [",", {"Fn::GetAtt": [broker, "StompEndpoints"]}]
    }
    assert abis_problems(t) == []
