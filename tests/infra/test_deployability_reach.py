"""Deployability, offline, part two: what test_deployability.py does not read.

- Network reach, packet by packet: the domain's security group admits HTTPS from every
  function in the VPC; each interface endpoint a function needs admits HTTPS from the VPC, sits
  in the function's subnets and answers the service's public name (private DNS); each gateway
  endpoint (S3, DynamoDB) is routed from the function's subnets.
- The domain's resource policy: a same-account resource policy ADDS to a role's own policy,
  so it must name each function's role with only the verbs that function's code sends; and the
  deploy-time role mapping puts each role in the security-plugin role its declaration implies.
- The firewall's log redacts every credential header the API reads; an audit entry rewritten
  in the table is alarmed; CloudWatch and S3 may use the keys of the topic and queue they write to.
- The workflow's own timeout is longer than all of its tasks' retries (else a retried transient
  cause ends as a timed-out execution halfway through the backoff).

Each fault, reintroduced into the synthesized template, makes the check fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from face_dedup import permissions, wiring

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ENDPOINT_NAME = {"stepfunctions": "states"}
GATEWAY = {"s3", "dynamodb"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("reach")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    _, stack = build_app(str(tmp / "cdk.out"), {"face-dedup:layers-dir": str(tmp / "layers")})
    return dict(Template.from_stack(stack).to_json())


def _of(t: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == kind}


def _ref(value: Any) -> str | None:
    """The logical id a Ref or GetAtt points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


def _functions(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for fn in _of(t, "AWS::Lambda::Function").values():
        name = fn["Properties"].get("Environment", {}).get("Variables", {}).get("FACE_DEDUP_FUNCTION")
        if name:
            found[name] = fn["Properties"]
    return found


def _ingress(t: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """Every ingress rule of a security group: inline, and standalone SecurityGroupIngress."""
    rules = list(t["Resources"][group]["Properties"].get("SecurityGroupIngress", []))
    rules += [
        r["Properties"]
        for r in _of(t, "AWS::EC2::SecurityGroupIngress").values()
        if _ref(r["Properties"]["GroupId"]) == group
    ]
    return rules


def _admits_443(rule: dict[str, Any], *, source_groups: set[str], vpc_cidr: bool) -> bool:
    if rule.get("IpProtocol") not in ("tcp", "-1"):
        return False
    if rule.get("IpProtocol") == "tcp" and not rule["FromPort"] <= 443 <= rule["ToPort"]:
        return False
    if _ref(rule.get("SourceSecurityGroupId")) in source_groups:
        return True
    return vpc_cidr and "CidrBlock" in json.dumps(rule.get("CidrIp", ""))


def _route_tables(t: dict[str, Any], subnets: set[str]) -> set[str]:
    return {
        str(_ref(a["Properties"]["RouteTableId"]))
        for a in _of(t, "AWS::EC2::SubnetRouteTableAssociation").values()
        if _ref(a["Properties"]["SubnetId"]) in subnets
    }


def access_policy(t: dict[str, Any]) -> dict[str, set[str]]:
    """The domain's resource policy as applied by CDK's custom resource: principal (logical id
    of its role) -> the es: actions it is granted."""
    resource = next(iter(_of(t, "Custom::OpenSearchAccessPolicy").values()))["Properties"]["Create"]
    text = "".join(p if isinstance(p, str) else f"@{_ref(p)}@" for p in resource["Fn::Join"][1])
    call = json.loads(text)
    granted: dict[str, set[str]] = {}
    for statement in json.loads(call["parameters"]["AccessPolicies"])["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        principals = statement["Principal"]["AWS"]
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for principal in principals if isinstance(principals, list) else [principals]:
            role = re.fullmatch(r"@(\w+)@", principal)
            granted.setdefault(role.group(1) if role else principal, set()).update(actions)
    return granted


def workflow_span(t: dict[str, Any]) -> tuple[float, float]:
    """(the longest the workflow's tasks can take with all their retries, its own timeout)."""
    machine = next(iter(_of(t, "AWS::StepFunctions::StateMachine").values()))["Properties"]
    parts = machine["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(p if isinstance(p, str) else "ref" for p in parts))
    attempt_s = max(wiring.FUNCTIONS[n].timeout_s for n in ("search", "complete", "notify", "record_failure"))
    total = 0.0
    for state in definition["States"].values():
        if state["Type"] != "Task":
            continue
        retries = state.get("Retry", [])
        longest = 0.0
        for retry in retries:
            waits = sum(
                min(retry["IntervalSeconds"] * retry["BackoffRate"] ** i, retry.get("MaxDelaySeconds", 1e9))
                for i in range(retry["MaxAttempts"])
            )
            longest = max(longest, waits + (retry["MaxAttempts"] + 1) * attempt_s)
        total += longest or attempt_s
    return total, float(definition.get("TimeoutSeconds", 1e12))


def credential_headers() -> set[str]:
    """Request headers the API reads that carry a credential (read from its code, lower-case)."""
    api = Path(__file__).resolve().parents[2] / "src" / "face_dedup_api"
    names = {
        m.lower()
        for f in api.rglob("*.py")
        for m in re.findall(r'headers\.get\(\s*"([A-Za-z0-9-]+)"', f.read_text(encoding="utf-8"))
    }
    found = {n for n in names if "token" in n or "auth" in n} | {"authorization"}
    assert "x-capture-token" in found, names  # the pattern reads the code's form
    return found


def key_users(t: dict[str, Any]) -> list[tuple[str, str]]:
    """(encrypted topic or queue, the service principal that writes to it)."""
    pairs = []
    for alarm in _of(t, "AWS::CloudWatch::Alarm").values():
        for action in alarm["Properties"].get("AlarmActions", []):
            if _ref(action):
                pairs.append((str(_ref(action)), "cloudwatch.amazonaws.com"))
    for notifications in _of(t, "Custom::S3BucketNotifications").values():
        for queue in notifications["Properties"]["NotificationConfiguration"].get("QueueConfigurations", []):
            pairs.append((str(_ref(queue["QueueArn"])), "s3.amazonaws.com"))
    return sorted(set(pairs))


def key_allows(t: dict[str, Any], target: str, principal: str) -> bool:
    props = t["Resources"][target]["Properties"]
    key = _ref(props.get("KmsMasterKeyId"))
    if key is None:
        return "KmsMasterKeyId" not in props  # unencrypted, or an AWS managed key (refused below)
    needed = {"kms:Decrypt", "kms:GenerateDataKey"}
    for statement in t["Resources"][key]["Properties"]["KeyPolicy"]["Statement"]:
        if statement.get("Effect") != "Allow" or principal not in json.dumps(statement.get("Principal")):
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        needed = {n for n in needed if not any(re.fullmatch(a.replace("*", ".*"), n) for a in actions)}
    return not needed


def problems(t: dict[str, Any]) -> list[str]:
    found: list[str] = []
    functions = _functions(t)
    domain = next(iter(_of(t, "AWS::OpenSearchService::Domain").values()))["Properties"]
    domain_groups = {str(_ref(g)) for g in domain["VPCOptions"]["SecurityGroupIds"]}
    endpoints = _of(t, "AWS::EC2::VPCEndpoint")
    policy = access_policy(t)
    setup = next(
        r for r in _of(t, "AWS::CloudFormation::CustomResource").values() if "ReadRoleArns" in r["Properties"]
    )
    mapped = {
        kind: {str(_ref(arn)) for arn in setup["Properties"].get(prop, [])}
        for kind, prop in (("face_dedup_read", "ReadRoleArns"), ("face_dedup_write", "WriteRoleArns"))
    }
    for spec, needs in permissions.iter_all():
        props = functions.get(spec.name)
        if props is None or not spec.in_vpc or "VpcConfig" not in props:
            continue  # test_deployability.py reports a function missing or outside the VPC
        groups = {str(_ref(g)) for g in props["VpcConfig"]["SecurityGroupIds"]}
        subnets = {str(_ref(s)) for s in props["VpcConfig"]["SubnetIds"]}
        role = str(_ref(props["Role"]))
        # 1. the domain's security group admits this function's
        if not any(
            _admits_443(r, source_groups=groups, vpc_cidr=False)
            for g in domain_groups
            for r in _ingress(t, g)
        ):
            found.append(f"{spec.name}: the domain's security group does not admit it on 443")
        # 2. every service it calls is reachable from its subnets
        for service in sorted(permissions.services(spec) - {"es"}):
            name = ENDPOINT_NAME.get(service, service)
            matching = [
                e["Properties"]
                for e in endpoints.values()
                if f'.{name}"' in json.dumps(e["Properties"]["ServiceName"])
            ]
            if not matching:
                continue  # test_deployability.py reports a missing endpoint
            e = matching[0]
            if e.get("VpcEndpointType") == "Gateway" or service in GATEWAY:
                routed = {str(_ref(r)) for r in e.get("RouteTableIds", [])}
                if not _route_tables(t, subnets) <= routed:
                    found.append(
                        f"{spec.name}: the {service} gateway endpoint is not routed from its subnets"
                    )
                continue
            if not subnets <= {str(_ref(s)) for s in e.get("SubnetIds", [])}:
                found.append(f"{spec.name}: the {service} endpoint is not in its subnets")
            if not e.get("PrivateDnsEnabled"):
                found.append(
                    f"{spec.name}: the {service} endpoint has no private DNS (the SDK calls the public name)"
                )
            endpoint_groups = {str(_ref(g)) for g in e.get("SecurityGroupIds", [])}
            if not any(
                _admits_443(r, source_groups=groups, vpc_cidr=True)
                for g in endpoint_groups
                for r in _ingress(t, g)
            ):
                found.append(f"{spec.name}: the {service} endpoint's security group does not admit it on 443")
        # 3. the domain's resource policy: exactly the verbs the function's code sends
        verbs = {n.action for n in needs if n.resource == wiring.INDEX}
        if not verbs <= policy.get(role, set()):
            found.append(
                f"{spec.name}: the domain's access policy lacks {sorted(verbs - policy.get(role, set()))}"
            )
        if policy.get(role, set()) - verbs:
            extra = sorted(policy[role] - verbs)
            found.append(f"{spec.name}: the domain's access policy grants {extra}, which it never sends")
        # 4. the security plugin maps its role to the role its declaration implies
        expected = wiring.index_role(spec)
        other = "face_dedup_write" if expected == "face_dedup_read" else "face_dedup_read"
        if role not in mapped[expected] or role in mapped[other]:
            found.append(f"{spec.name}: its role is not mapped to {expected} (only) in the index")
    for principal, actions in policy.items():
        if "*" in principal or "es:*" in actions:
            found.append(f"the domain's access policy grants {sorted(actions)} to {principal}")
    # 5. the firewall's log (kept a year) holds no credential the API reads from a header
    logging = next(iter(_of(t, "AWS::WAFv2::LoggingConfiguration").values()))["Properties"]
    redacted = {
        f["SingleHeader"]["Name"].lower() for f in logging.get("RedactedFields", []) if "SingleHeader" in f
    }
    for header in sorted(credential_headers() - redacted):
        found.append(f"firewall log: the {header} header is logged in clear")
    # 6. an audit entry rewritten or removed in the table (the archive function counts it) is alarmed
    if not any(
        a["Properties"].get("MetricName") == "AuditEntriesRewritten"
        for a in _of(t, "AWS::CloudWatch::Alarm").values()
    ):
        found.append("no alarm on audit entries rewritten or removed in the table")
    # 7. services that write to an encrypted topic or queue may use its key (else CloudWatch's
    # alarm notifications and S3's upload events are dropped without an error anywhere)
    for source, principal in key_users(t):
        if not key_allows(t, source, principal):
            found.append(f"{source}: encrypted with a key that {principal} may not use")
    # 8. retries fit the execution's own timeout
    span, timeout = workflow_span(t)
    if span > timeout:
        found.append(f"workflow: its tasks' retries take up to {span:.0f} s, its timeout is {timeout:.0f} s")
    return found


def test_every_function_reaches_what_it_calls(template: dict[str, Any]) -> None:
    assert problems(template) == []


def _domain_sg_ingress_dropped(t: dict[str, Any]) -> None:
    for k in list(_of(t, "AWS::EC2::SecurityGroupIngress")):
        del t["Resources"][k]


def _endpoint(t: dict[str, Any], service: str) -> dict[str, Any]:
    return next(
        e["Properties"]
        for e in _of(t, "AWS::EC2::VPCEndpoint").values()
        if f'.{service}"' in json.dumps(e["Properties"]["ServiceName"])
    )


def _sqs_endpoint_closed(t: dict[str, Any]) -> None:
    group = str(_ref(_endpoint(t, "sqs")["SecurityGroupIds"][0]))
    t["Resources"][group]["Properties"]["SecurityGroupIngress"] = []


def _sqs_endpoint_no_dns(t: dict[str, Any]) -> None:
    _endpoint(t, "sqs")["PrivateDnsEnabled"] = False


def _sqs_endpoint_one_subnet(t: dict[str, Any]) -> None:
    _endpoint(t, "sqs")["SubnetIds"] = _endpoint(t, "sqs")["SubnetIds"][:1]


def _dynamodb_unrouted(t: dict[str, Any]) -> None:
    _endpoint(t, "dynamodb")["RouteTableIds"] = _endpoint(t, "dynamodb")["RouteTableIds"][:1]


def _policy_edit(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        resource = next(iter(_of(t, "Custom::OpenSearchAccessPolicy").values()))["Properties"]["Create"]
        parts = resource["Fn::Join"][1]
        parts[:] = [p.replace(old, new) if isinstance(p, str) else p for p in parts]

    return mutate


def _search_mapped_to_write(t: dict[str, Any]) -> None:
    setup = next(
        r for r in _of(t, "AWS::CloudFormation::CustomResource").values() if "ReadRoleArns" in r["Properties"]
    )
    setup["Properties"]["WriteRoleArns"] += setup["Properties"]["ReadRoleArns"]
    setup["Properties"]["ReadRoleArns"] = []


def _workflow_timeout(seconds: int) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        machine = next(iter(_of(t, "AWS::StepFunctions::StateMachine").values()))["Properties"]
        parts = machine["DefinitionString"]["Fn::Join"][1]
        parts[:] = [
            re.sub(r'"TimeoutSeconds":\d+', f'"TimeoutSeconds":{seconds}', p) if isinstance(p, str) else p
            for p in parts
        ]

    return mutate


def _capture_token_logged(t: dict[str, Any]) -> None:
    logging = next(iter(_of(t, "AWS::WAFv2::LoggingConfiguration").values()))["Properties"]
    logging["RedactedFields"] = [{"SingleHeader": {"Name": "authorization"}}]


def _no_audit_rewrite_alarm(t: dict[str, Any]) -> None:
    for k, a in list(_of(t, "AWS::CloudWatch::Alarm").items()):
        if a["Properties"].get("MetricName") == "AuditEntriesRewritten":
            del t["Resources"][k]


def _key_without(principal: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        for key in _of(t, "AWS::KMS::Key").values():
            statements = key["Properties"]["KeyPolicy"]["Statement"]
            statements[:] = [s for s in statements if principal not in json.dumps(s.get("Principal"))]

    return mutate


FAULTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "alarms to a topic whose key CloudWatch may not use": (
        _key_without("cloudwatch.amazonaws.com"),
        "may not use",
    ),
    "upload events to a queue whose key S3 may not use": (_key_without("s3.amazonaws.com"), "may not use"),
    "audit rewrites not alarmed": (_no_audit_rewrite_alarm, "no alarm on audit entries rewritten"),
    "the capture token in the firewall's log": (_capture_token_logged, "x-capture-token header is logged"),
    "the domain's security group admits nobody": (_domain_sg_ingress_dropped, "does not admit it on 443"),
    "the SQS endpoint's security group closed": (_sqs_endpoint_closed, "sqs endpoint's security group"),
    "the SQS endpoint without private DNS": (_sqs_endpoint_no_dns, "sqs endpoint has no private DNS"),
    "the SQS endpoint in one subnet only": (_sqs_endpoint_one_subnet, "sqs endpoint is not in its subnets"),
    "the DynamoDB gateway routed from one subnet": (
        _dynamodb_unrouted,
        "dynamodb gateway endpoint is not routed",
    ),
    "every verb to every role (the old access policy)": (
        _policy_edit(
            '\\"Action\\":\\"es:ESHttpPost\\"', '\\"Action\\":[\\"es:ESHttpPost\\",\\"es:ESHttpDelete\\"]'
        ),
        "grants ['es:ESHttpDelete'], which it never sends",
    ),
    "the access policy open to anyone": (
        _policy_edit("es:ESHttpPost", "es:*"),
        "the domain's access policy grants",
    ),
    "search mapped to the write role": (
        _search_mapped_to_write,
        "search: its role is not mapped to face_dedup_read",
    ),
    "the workflow times out mid-retries (the old 15 minutes)": (
        _workflow_timeout(900),
        "workflow: its tasks' retries",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_reintroduced_fails_the_check(template: dict[str, Any], fault: str) -> None:
    mutate, expected = FAULTS[fault]
    broken = copy.deepcopy(template)
    mutate(broken)
    found = problems(broken)
    assert any(expected in p for p in found), (fault, found)
