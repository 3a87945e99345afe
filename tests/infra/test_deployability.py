"""Deployability, offline: the synthesized template, read as CloudFormation will, against what
each function's code calls. What a function needs is not restated here: it comes from
`face_dedup.wiring` (the port methods each function calls) and `face_dedup.permissions` (the
client calls those methods make, parsed from the adapters' source). Each fault this check
exists for, reintroduced into the template, makes it fail (the parametrised mutations below).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from face_dedup import permissions, wiring
from face_dedup.deployment import FUNCTION_ENV, PREFIX

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# Logical-id prefixes of the resources behind each need (CDK: construct path without slashes).
RESOURCE_PREFIX = {
    wiring.INDEX: "SearchDomain",
    wiring.BLOBS: "StorageFaces",
    wiring.UPLOADS: "StorageUploads",
    wiring.NOTIFIER: "CaseNotificationsQueue",
    wiring.OFFICERS: "NotificationsCases",
    wiring.WORKFLOW: "WorkflowStateMachine",
    wiring.ARCHIVE: "StorageAuditArchive",
    permissions.KEY: "EncryptionKey",
    **{
        f"store:{role}": f"Tables{role.capitalize()}"
        for role in ("records", "cases", "imports", "audit", "staged")
    },
}
ENDPOINT_NAME = {"stepfunctions": "states"}
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    tmp = tmp_path_factory.mktemp("deploy")
    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    _, stack = build_app(str(tmp / "cdk.out"), {"face-dedup:layers-dir": str(tmp / "layers")})
    return dict(Template.from_stack(stack).to_json())


def _of(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _logical(prefix: str, template: dict[str, Any], kinds: tuple[str, ...]) -> str:
    found: list[str] = [
        k for k, v in template["Resources"].items() if k.startswith(prefix) and v["Type"] in kinds
    ]
    assert len(found) == 1, (prefix, found)
    return found[0]


RESOURCE_KINDS = (
    "AWS::OpenSearchService::Domain",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::SNS::Topic",
    "AWS::StepFunctions::StateMachine",
    "AWS::KMS::Key",
    "AWS::DynamoDB::Table",
)


def functions_by_name(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    found = {}
    for logical, fn in _of(template, "AWS::Lambda::Function").items():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        if FUNCTION_ENV in env:
            found[env[FUNCTION_ENV]] = (logical, fn)
    return found


def statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    found = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in _of(template, kind).values():
            if {"Ref": role} in policy["Properties"].get("Roles", []):
                found += policy["Properties"]["PolicyDocument"]["Statement"]
    return [s for s in found if s.get("Effect") == "Allow"]


def allows(found: list[dict[str, Any]], action: str, logical: str) -> bool:
    return any(
        any(fnmatch.fnmatchcase(action, pattern) for pattern in _listed(s["Action"]))
        and f'"{logical}"' in json.dumps(s["Resource"])
        for s in found
    )


def allows_action(found: list[dict[str, Any]], action: str) -> bool:
    return any(any(fnmatch.fnmatchcase(action, p) for p in _listed(s["Action"])) for s in found)


def not_allowed(template: dict[str, Any], calls: set[tuple[str, str, str]]) -> list[str]:
    """Recorded (function, service, operation) calls that the function's own role refuses
    (the moto end-to-end flow records every call its real handlers make)."""
    functions = functions_by_name(template)
    refused = []
    for function, service, operation in sorted(calls):
        granted = statements(template, functions[function][1]["Properties"]["Role"]["Fn::GetAtt"][0])
        refused += [
            f"{function}: {action}"
            for action in permissions.iam_actions(service, operation)
            if not allows_action(granted, action)
        ]
    return refused


def definition(template: dict[str, Any]) -> dict[str, Any]:
    machine = next(iter(_of(template, "AWS::StepFunctions::StateMachine").values()))
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return dict(json.loads("".join(p if isinstance(p, str) else "ref" for p in parts)))


def problems(template: dict[str, Any]) -> list[str]:
    """Everything that would stop the stack working as deployed; empty when it would work."""
    found: list[str] = []
    functions = functions_by_name(template)
    endpoints = [
        json.dumps(e["Properties"]["ServiceName"]) for e in _of(template, "AWS::EC2::VPCEndpoint").values()
    ]
    ids = {need: _logical(prefix, template, RESOURCE_KINDS) for need, prefix in RESOURCE_PREFIX.items()}
    queue_sources = {
        json.dumps(m["Properties"]["EventSourceArn"]): json.dumps(m["Properties"]["FunctionName"])
        for m in _of(template, "AWS::Lambda::EventSourceMapping").values()
    }
    for spec, needs in permissions.iter_all():
        if spec.name not in functions:
            found.append(f"{spec.name}: no function")
            continue
        logical, fn = functions[spec.name]
        props = fn["Properties"]
        role = props["Role"]["Fn::GetAtt"][0]
        granted = statements(template, role)
        # 1. its role allows every action its adapters' code performs, on the right resource
        for need in sorted(needs, key=lambda n: (n.resource, n.action)):
            if not allows(granted, need.action, ids[need.resource]):
                found.append(f"{spec.name}: role lacks {need.action} on {need.resource}")
        # 2. and nothing that writes or deletes beyond that (least privilege)
        for statement in granted:
            for action in _listed(statement["Action"]):
                if action.split(":")[1].startswith(permissions.READ_VERBS) or action.startswith(
                    ("xray:", "logs:")
                ):
                    continue
                for need_resource, rid in ids.items():
                    if f'"{rid}"' not in json.dumps(statement["Resource"]):
                        continue
                    if permissions.Need(action, need_resource) in needs:
                        continue
                    source = queue_sources.get(json.dumps({"Fn::GetAtt": [rid, "Arn"]}), "")
                    if logical in source or need_resource == permissions.KEY:
                        continue  # consuming its own event source queue; the key is checked above
                    found.append(
                        f"{spec.name}: role allows {action} on {need_resource}, which it never calls"
                    )
        # 3. network: in the VPC iff it talks to the index; an endpoint for every service it calls
        in_vpc = "VpcConfig" in props
        if spec.in_vpc and not in_vpc:
            found.append(f"{spec.name}: calls the index but runs outside the VPC")
        if in_vpc:
            for service in sorted(permissions.services(spec) - {"es"}):
                name = ENDPOINT_NAME.get(service, service)
                if not any(e.endswith(f'.{name}"]]}}') or f'.{name}"' in e for e in endpoints):
                    found.append(f"{spec.name}: in the VPC without an endpoint for {service}")
        # 4. every setting it reads is in its environment
        env = props.get("Environment", {}).get("Variables", {})
        for setting in wiring.settings_for(spec):
            if PREFIX + setting.upper() not in env:
                found.append(f"{spec.name}: setting {setting} missing from its environment")
        # 5. functions that reach the index have a bound (the index's size decides it)
        if spec.name in ("search", "complete") and "ReservedConcurrentExecutions" not in props:
            found.append(f"{spec.name}: unbounded concurrency against the index")
    # 6. the index exists and each role is mapped before any function runs
    setups = _of(template, "AWS::CloudFormation::CustomResource")
    if not any("ReadRoleArns" in r["Properties"] for r in setups.values()):
        found.append("no deploy-time index setup (index creation and role mapping)")
    # 7. alarms reach people: the operations topic, not officers' case topic
    operations = _logical("NotificationsOperations", template, ("AWS::SNS::Topic",))
    for name, alarm in _of(template, "AWS::CloudWatch::Alarm").items():
        targets = json.dumps(alarm["Properties"].get("AlarmActions", []))
        if f'"{operations}"' not in targets:
            found.append(f"alarm {name} notifies nobody on the operations topic")
    # 8. retries outlast a transient overload; what outlasts them stays redrivable, not rejected
    for state_name, state in definition(template)["States"].items():
        if state.get("Type") != "Task":
            continue
        retry = next((r for r in state.get("Retry", []) if "TransientError" in r["ErrorEquals"]), None)
        if retry is None or not set(retry["ErrorEquals"]) >= LAMBDA_ERRORS:
            found.append(f"{state_name}: transient and Lambda service errors are not retried")
            continue
        span = sum(
            min(retry["IntervalSeconds"] * retry["BackoffRate"] ** i, retry.get("MaxDelaySeconds", 1e9))
            for i in range(retry["MaxAttempts"])
        )
        if span < 300 or retry.get("JitterStrategy") != "FULL":
            found.append(f"{state_name}: retries give up after {span:.0f} s or without jitter")
        caught = {e for c in state.get("Catch", []) for e in c["ErrorEquals"]}
        if caught & (set(retry["ErrorEquals"]) | {"States.ALL", "States.TaskFailed"}):
            found.append(f"{state_name}: a transient error that outlasts the retries becomes a rejection")
    found += verify_fits_the_platform(template)
    found += receipt_names_the_backups(template)
    found += drift_alarms_per_tenant(template)
    return found


def drift_alarms_per_tenant(template: dict[str, Any]) -> list[str]:
    """Every tenant of the deployment (cdk.json's `tenants`) has its case-rate and rejection-rate
    alarms on the drift metrics the deciding functions write (their action is checked above)."""
    from face_dedup.adapters.emf_drift import NAMESPACE

    context = json.loads((Path(__file__).resolve().parents[2] / "infra" / "cdk.json").read_text())["context"]
    tenants = str(context.get("face-dedup:tenants", "default")).split(",")
    found = []
    for tenant in tenants:
        watched = [
            a
            for a in _of(template, "AWS::CloudWatch::Alarm").values()
            if NAMESPACE in json.dumps(a) and f'"Value": "{tenant}"' in json.dumps(a)
        ]
        names = json.dumps(watched)
        for metric in ("outcome_review", "outcome_rejected"):
            if metric not in names:
                found.append(f"tenant {tenant}: no drift alarm on {metric}")
    return found


def receipt_names_the_backups(template: dict[str, Any]) -> list[str]:
    """The erase receipt's backup windows (the API's environment) are the template's own."""
    _, api = functions_by_name(template)["api"]
    stated = dict(
        item.split("=")
        for item in api["Properties"]["Environment"]["Variables"]
        .get(PREFIX + "BACKUP_RETENTION", "")
        .split(",")
        if item
    )
    windows = {
        t["Properties"]["PointInTimeRecoverySpecification"].get("RecoveryPeriodInDays", 35)
        for t in _of(template, "AWS::DynamoDB::Table").values()
    }
    if windows != {int(stated.get("dynamodb-point-in-time-recovery", -1))}:
        return [f"erase receipt: point-in-time recovery stated {stated} but the tables keep {windows} days"]
    return []


# AWS limits the cloud 1:1 verify must fit (AWS docs: the managed rule group's
# SizeRestrictions_BODY blocks bodies over 8 KB; API Gateway REST payloads 10 MB; Lambda
# synchronous invocation payloads 6 MB).
WAF_BODY_LIMIT = 8 * 1024
API_GATEWAY_LIMIT = 10 * 1024 * 1024
LAMBDA_LIMIT = 6 * 1024 * 1024


def largest_cloud_verify_bodies() -> dict[str, int]:
    """The largest JSON body each cloud verify route accepts (an inline body is refused in the
    cloud: tests/integration/test_verify_uploads_cloud.py), built from the routes' own models."""
    from typing import get_args

    from face_dedup_api.app import VerifyBody, VerifyUploadsBody

    upload = VerifyBody.model_validate({"upload_id": "f" * 32})
    widest = max(get_args(VerifyUploadsBody.model_fields["first_content_type"].annotation), key=len)
    uploads = VerifyUploadsBody.model_validate({"first_content_type": widest, "second_content_type": widest})
    return {
        "POST /verify": len(upload.model_dump_json(exclude_none=True)),
        "POST /verify/uploads": len(uploads.model_dump_json()),
    }


def verify_fits_the_platform(template: dict[str, Any]) -> list[str]:
    from face_dedup.vision.decode import DecodeLimits
    from face_dedup_api.app import VERIFY_PREFIX

    found: list[str] = []
    photo_limit = DecodeLimits().max_bytes
    # The firewall's body rule is on for the API, so every route's body must fit 8 KB.
    acl = next(iter(_of(template, "AWS::WAFv2::WebACL").values()))["Properties"]
    common = [r for r in acl["Rules"] if "AWSManagedRulesCommonRuleSet" in json.dumps(r["Statement"])]
    overridden = "SizeRestrictions_BODY" in json.dumps(common)
    if not common or overridden:
        found.append("the firewall's 8 KB body rule is off: the body limit is then API Gateway's alone")
    for route, size in largest_cloud_verify_bodies().items():
        if size > WAF_BODY_LIMIT:
            found.append(f"{route}: accepts {size}-byte bodies, over the firewall's {WAF_BODY_LIMIT}")
    if photo_limit <= WAF_BODY_LIMIT:
        found.append("photos would fit a request body: the presigned detour is then needless")
    # Photos go to the uploads bucket by presigned POST: no ingest trigger there, gone within a day.
    uploads = _logical(RESOURCE_PREFIX[wiring.UPLOADS], template, ("AWS::S3::Bucket",))
    rules = template["Resources"][uploads]["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    if not any(
        r.get("Prefix") == VERIFY_PREFIX and r.get("ExpirationInDays", 99) <= 1 and r["Status"] == "Enabled"
        for r in rules
    ):
        found.append(f"uploads bucket: {VERIFY_PREFIX} photos never verified are not expired within a day")
    triggers = [
        rule
        for notifications in _of(template, "Custom::S3BucketNotifications").values()
        for rule in re.findall(r'"Name": "prefix", "Value": "([^"]*)"', json.dumps(notifications))
    ]
    assert "selfies/" in triggers, triggers  # the pattern reads the template's form
    for rule in triggers:
        if VERIFY_PREFIX.startswith(rule) or rule.startswith(VERIFY_PREFIX):
            found.append(f"uploads under {VERIFY_PREFIX} would start an enrollment (prefix {rule!r})")
    # The API function holds both photos at once, well inside its memory.
    _, api = functions_by_name(template)["api"]
    if api["Properties"]["MemorySize"] * 1024 * 1024 < 4 * 2 * photo_limit:
        found.append("api: too little memory for two photos at the upload limit (and their decoding)")
    return found


def test_verify_routes_fit_the_firewall_api_gateway_and_lambda() -> None:
    """The numbers the README states: each cloud verify body is far below every limit."""
    sizes = largest_cloud_verify_bodies()
    assert all(size < 200 for size in sizes.values()), sizes
    assert max(sizes.values()) < WAF_BODY_LIMIT < LAMBDA_LIMIT < API_GATEWAY_LIMIT


def test_the_stack_as_synthesized_is_deployable(template: dict[str, Any]) -> None:
    assert problems(template) == []


def test_what_each_function_needs_comes_from_the_adapter_code() -> None:
    needs = dict((spec.name, n) for spec, n in permissions.iter_all())
    # the search step reads only; only the erase and failure paths delete
    # (IAM cannot tell a k-NN search POST from a bulk POST: the index's security plugin role can)
    assert all(n.reads for n in needs["search"] if n.resource not in (permissions.KEY, wiring.INDEX))
    assert wiring.index_role(wiring.FUNCTIONS["search"]) == "face_dedup_read"
    assert wiring.index_role(wiring.FUNCTIONS["complete"]) == "face_dedup_write"
    deleters = {
        name for name, n in needs.items() for x in n if x.action in ("s3:DeleteObject", "es:ESHttpDelete")
    }
    assert deleters == {"record_failure", "complete", "api"}  # complete: a verified selfie is not kept
    assert permissions.Need("sqs:SendMessage", wiring.NOTIFIER) in needs["complete"]
    assert not any(n.resource == wiring.INDEX for n in needs["ingest"])  # ingest stays out of the VPC
    for port in permissions.ADAPTERS:  # every public adapter method maps to known IAM actions
        spec = wiring.FunctionSpec("probe", "h", "d", {port: wiring.ALL})
        # drift metrics go to the function's own log (EMF): no action, no endpoint
        assert bool(permissions.needs(spec)) is (port != wiring.DRIFT), port
    assert not permissions.services(wiring.FUNCTIONS["complete"]) & {permissions.EMF, "logs"}


def _function(t: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = functions_by_name(t)[name][1]["Properties"]
    return properties  # the template's own dict: mutations change the template


def _drop_vpc(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda t: _function(t, name).pop("VpcConfig")


def _drop_endpoint(service: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        for k, v in list(_of(t, "AWS::EC2::VPCEndpoint").items()):
            if f'.{service}"' in json.dumps(v["Properties"]["ServiceName"]):
                del t["Resources"][k]

    return mutate


def _drop_action(name: str, action: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        role = functions_by_name(t)[name][1]["Properties"]["Role"]["Fn::GetAtt"][0]
        for s in statements(t, role):
            s["Action"] = [a for a in _listed(s["Action"]) if a != action] or ["none:None"]

    return mutate


def _grant(name: str, action: str, resource_prefix: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        role = functions_by_name(t)[name][1]["Properties"]["Role"]["Fn::GetAtt"][0]
        rid = _logical(resource_prefix, t, RESOURCE_KINDS)
        statements(t, role)[0]["Action"] = [*_listed(statements(t, role)[0]["Action"])]
        t["Resources"]["Injected"] = {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "Roles": [{"Ref": role}],
                "PolicyDocument": {
                    "Statement": [
                        {"Effect": "Allow", "Action": action, "Resource": {"Fn::GetAtt": [rid, "Arn"]}}
                    ]
                },
            },
        }

    return mutate


def _drop_env(name: str, variable: str) -> Callable[[dict[str, Any]], None]:
    return lambda t: _function(t, name)["Environment"]["Variables"].pop(variable)


def _no_alarm_actions(t: dict[str, Any]) -> None:
    for alarm in _of(t, "AWS::CloudWatch::Alarm").values():
        alarm["Properties"].pop("AlarmActions", None)


def _alarms_to_case_topic(t: dict[str, Any]) -> None:
    cases = _logical("NotificationsCases", t, ("AWS::SNS::Topic",))
    for alarm in _of(t, "AWS::CloudWatch::Alarm").values():
        alarm["Properties"]["AlarmActions"] = [{"Ref": cases}]


def _asl_edit(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(t: dict[str, Any]) -> None:
        machine = next(iter(_of(t, "AWS::StepFunctions::StateMachine").values()))
        parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
        parts[:] = [p.replace(old, new) if isinstance(p, str) else p for p in parts]

    return mutate


def _drop_index_setup(t: dict[str, Any]) -> None:
    for k in list(_of(t, "AWS::CloudFormation::CustomResource")):
        del t["Resources"][k]


def _waf_body_rule_counted(t: dict[str, Any]) -> None:
    acl = next(iter(_of(t, "AWS::WAFv2::WebACL").values()))["Properties"]
    for rule in acl["Rules"]:
        group = rule["Statement"].get("ManagedRuleGroupStatement", {})
        if group.get("Name") == "AWSManagedRulesCommonRuleSet":
            group["RuleActionOverrides"] = [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]


def _drop_drift_alarms(t: dict[str, Any]) -> None:
    for k, alarm in list(_of(t, "AWS::CloudWatch::Alarm").items()):
        if "FaceDedup/Drift" in json.dumps(alarm):
            del t["Resources"][k]


def _pitr_longer(t: dict[str, Any]) -> None:
    for table in _of(t, "AWS::DynamoDB::Table").values():
        table["Properties"]["PointInTimeRecoverySpecification"]["RecoveryPeriodInDays"] = 90


def _verify_photos_kept(t: dict[str, Any]) -> None:
    uploads = _logical(RESOURCE_PREFIX[wiring.UPLOADS], t, ("AWS::S3::Bucket",))
    rules = t["Resources"][uploads]["Properties"]["LifecycleConfiguration"]["Rules"]
    rules[:] = [r for r in rules if r.get("Prefix") != "verify/"]


FAULTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "verify photos in a body (the firewall's body rule counted)": (
        _waf_body_rule_counted,
        "the firewall's 8 KB body rule is off",
    ),
    "verify photos never verified are kept": (_verify_photos_kept, "not expired within a day"),
    "no drift alarms": (_drop_drift_alarms, "no drift alarm on outcome_review"),
    "erase receipt understates the backup window": (
        _pitr_longer,
        "erase receipt: point-in-time recovery stated",
    ),
    "search outside the VPC": (_drop_vpc("search"), "search: calls the index but runs outside the VPC"),
    "complete without an SQS endpoint": (
        _drop_endpoint("sqs"),
        "complete: in the VPC without an endpoint for sqs",
    ),
    "search without a DynamoDB endpoint": (
        _drop_endpoint("dynamodb"),
        "search: in the VPC without an endpoint",
    ),
    "complete cannot queue notifications": (
        _drop_action("complete", "sqs:SendMessage"),
        "complete: role lacks sqs:SendMessage",
    ),
    "ingest cannot start the workflow": (
        _drop_action("ingest", "states:StartExecution"),
        "ingest: role lacks states:StartExecution",
    ),
    "search can delete photos (shared role)": (
        _grant("search", "s3:DeleteObject", "StorageFaces"),
        "search: role allows s3:DeleteObject on blobs",
    ),
    "search can write a table": (
        _grant("search", "dynamodb:PutItem", "TablesCases"),
        "search: role allows dynamodb:PutItem on store:cases",
    ),
    "notify can write the audit log it never touches": (
        _grant("notify", "dynamodb:PutItem", "TablesAudit"),
        "notify: role allows dynamodb:PutItem on store:audit",
    ),
    "a setting missing": (
        _drop_env("complete", "FACE_DEDUP_NOTIFICATION_QUEUE_URL"),
        "complete: setting notification_queue_url missing",
    ),
    "no concurrency bound": (
        lambda t: _function(t, "search").pop("ReservedConcurrentExecutions"),
        "search: unbounded concurrency",
    ),
    "alarms without actions": (_no_alarm_actions, "notifies nobody"),
    "alarms to officers' case topic": (_alarms_to_case_topic, "notifies nobody"),
    "retries give up after a minute": (
        _asl_edit('"MaxAttempts":8', '"MaxAttempts":3'),
        "retries give up after",
    ),
    "no jitter": (_asl_edit('"JitterStrategy":"FULL"', '"JitterStrategy":"NONE"'), "without jitter"),
    "Lambda service errors not retried": (
        _asl_edit('"Lambda.AWSLambdaException",', ""),
        "Lambda service errors are not retried",
    ),
    "transient failure becomes a rejection": (
        _asl_edit('"ErrorEquals":["PermanentError"]', '"ErrorEquals":["States.ALL"]'),
        "outlasts the retries becomes a rejection",
    ),
    "index created at cold start (no deploy step)": (_drop_index_setup, "no deploy-time index setup"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_reintroduced_fails_the_check(template: dict[str, Any], fault: str) -> None:
    mutate, expected = FAULTS[fault]
    broken = copy.deepcopy(template)
    mutate(broken)
    found = problems(broken)
    assert found, f"{fault}: the check did not notice"
    assert any(expected in p for p in found), (fault, found)


def test_a_call_outside_a_functions_role_is_refused(template: dict[str, Any]) -> None:
    calls = {("search", "dynamodb", "get_item"), ("complete", "sqs", "send_message")}
    assert not_allowed(template, calls) == []
    assert not_allowed(template, {("search", "s3", "delete_objects")}) == [
        "search: s3:DeleteObject",
        "search: s3:DeleteObjectVersion",
    ]
    broken = copy.deepcopy(template)
    _drop_action("complete", "sqs:SendMessage")(broken)
    assert not_allowed(broken, calls) == ["complete: sqs:SendMessage"]


def test_cfn_lint_finds_nothing_but_cdks_redundant_depends_on(
    template: dict[str, Any], tmp_path: Path
) -> None:
    import shutil
    import subprocess

    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    if cfn_lint is None:
        pytest.skip("cfn-lint is not installed (a dev extra)")
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    result = subprocess.run(
        [cfn_lint, "--format", "parseable", str(path)], capture_output=True, text=True, check=False
    )
    rules = set(re.findall(r":([EWI]\d{4}):", result.stdout))
    assert rules <= {"W3005"}, result.stdout
