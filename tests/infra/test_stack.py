"""The CDK app, synthesized offline with cdk-nag AwsSolutions: what a security reviewer checks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))

from aws_cdk.assertions import Match, Template  # noqa: E402

from app import build_app  # noqa: E402


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in layer folders: these tests check the infrastructure, not the layer contents
    (layers/ builds and size-checks those)."""
    root = tmp_path_factory.mktemp("layers")
    for name in ("runtime", "models"):
        (root / name).mkdir()
        (root / name / "README").write_text(f"{name} layer placeholder for synthesis tests\n")
    return root


@pytest.fixture(scope="module")
def synthesized(layers: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Template]]:
    app, stack = build_app(str(tmp_path_factory.mktemp("cdk.out")), {"face-dedup:layers-dir": str(layers)})
    app.synth()  # runs cdk-nag: any unacknowledged finding raises here
    yield stack, Template.from_stack(stack)


def resources(template: Template, kind: str) -> dict[str, Any]:
    return dict(template.find_resources(kind))


def method_paths(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each API method by logical id: (its path, e.g. "/capture/outcome", its properties)."""
    parts = {k: r["Properties"] for k, r in resources(template, "AWS::ApiGateway::Resource").items()}

    def path(resource: Any) -> str:
        if not isinstance(resource, dict) or "Ref" not in resource:
            return ""  # the API's root resource (Fn::GetAtt RootResourceId)
        part = parts[resource["Ref"]]
        return f"{path(part['ParentId'])}/{part['PathPart']}"

    return {
        k: (path(m["Properties"]["ResourceId"]) or "/", m["Properties"])
        for k, m in resources(template, "AWS::ApiGateway::Method").items()
    }


# Capture routes applicants reach without a Cognito account (the function checks their capture token).
CAPTURE_BY_FUNCTION = {
    ("GET", "/capture"),
    ("GET", "/capture/config.json"),
    ("GET", "/capture/outcome"),
    ("POST", "/capture/upload-url"),
}


def test_functions_are_arm64_python312_traced(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    functions = resources(template, "AWS::Lambda::Function")
    ours = {k: v for k, v in functions.items() if v["Properties"].get("Runtime") == "python3.12"}
    from face_dedup import wiring

    assert len(ours) == len(wiring.FUNCTIONS) + 1  # the declared ones, and the deploy-time index setup
    for function in ours.values():
        props = function["Properties"]
        assert props["Architectures"] == ["arm64"]
        if "FACE_DEDUP_TABLE_RECORDS" in props["Environment"]["Variables"]:
            assert props["Environment"]["Variables"]["FACE_DEDUP_STORE_BACKEND"] == "dynamodb"
    with_models = [f for f in ours.values() if len(f["Properties"]["Layers"]) == 2]
    assert (
        len(with_models) == 2
    )  # ingest and the API (1:1 verify) read photos; no other function loads models
    assert all(len(f["Properties"]["Layers"]) == 1 for f in ours.values() if f not in with_models)


def test_buckets_are_private_encrypted_versioned_tls_only(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    buckets = resources(template, "AWS::S3::Bucket")
    kms_buckets = [
        b
        for b in buckets.values()
        if b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "aws:kms"
    ]
    assert len(kms_buckets) == 3  # uploads, faces, the audit archive (Object Lock)
    locked = [b for b in kms_buckets if b["Properties"].get("ObjectLockEnabled")]
    assert len(locked) == 1
    assert (
        locked[0]["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    )
    for bucket in buckets.values():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert all(
            block[k]
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        )
    for bucket in kms_buckets:
        assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
        if bucket in locked:
            continue  # the audit archive: nothing expires before its retention ends
        rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 1 for r in rules)
    policies = json.dumps(resources(template, "AWS::S3::BucketPolicy"))
    assert policies.count('"aws:SecureTransport": "false"') >= 3


def test_queue_has_dead_letter_queue_and_alarm(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "RedrivePolicy": {"maxReceiveCount": 5, "deadLetterTargetArn": Match.any_value()},
            "KmsMasterKeyId": Match.any_value(),
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
    )
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert (
        sum("dead-letter" in a["Properties"]["AlarmDescription"] for a in alarms.values()) == 3
    )  # depth x2, age
    assert len(alarms) >= 8
    assert resources(template, "AWS::CloudWatch::Dashboard")


def test_tables_point_in_time_recovery_kms_and_ttl(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    tables = resources(template, "AWS::DynamoDB::Table")
    assert len(tables) == 5
    for table in tables.values():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert props["DeletionProtectionEnabled"] is True
    assert sum(1 for t in tables.values() if "TimeToLiveSpecification" in t["Properties"]) == 1


def test_audit_table_is_append_only_for_the_service(synthesized: tuple[Any, Template]) -> None:
    stack, template = synthesized
    audit_id = stack.get_logical_id(stack.tables.tables["audit"].node.default_child)
    seen = set()
    # Large role policies overflow into managed policies at synthesis: look at both kinds.
    policies = {**resources(template, "AWS::IAM::Policy"), **resources(template, "AWS::IAM::ManagedPolicy")}
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if audit_id in json.dumps(statement.get("Resource", "")):
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                seen.update(actions)
    # Append and read (auditors' export); no role of the service can change or delete an entry.
    assert "dynamodb:PutItem" in seen
    assert not seen & {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:*"}


def test_review_api_has_a_cognito_authorizer_on_every_data_route(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    authorizers = resources(template, "AWS::ApiGateway::Authorizer")
    assert [a["Properties"]["Type"] for a in authorizers.values()] == ["COGNITO_USER_POOLS"]
    methods = [m["Properties"] for m in resources(template, "AWS::ApiGateway::Method").values()]
    public = [(path, m) for path, m in method_paths(template).values() if m["AuthorizationType"] == "NONE"]
    # the console's and capture page's static files, served from a bucket (no function, no data),
    # and the capture routes that check the applicant's capture token in the function
    by_function = {(m["HttpMethod"], path) for path, m in public if m["Integration"]["Type"] == "AWS_PROXY"}
    assert by_function == CAPTURE_BY_FUNCTION
    assert all(
        m["HttpMethod"] == "GET" and m["Integration"]["Type"] == "AWS"
        for path, m in public
        if (m["HttpMethod"], path) not in CAPTURE_BY_FUNCTION
    )
    sessions = [m for path, m in method_paths(template).values() if path == "/capture/sessions"]
    assert [m["AuthorizationType"] for m in sessions] == ["COGNITO_USER_POOLS"]  # issuing a link: staff
    protected = [m for m in methods if m["AuthorizationType"] == "COGNITO_USER_POOLS"]
    assert protected and all("AuthorizerId" in m for m in protected)
    template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {"MfaConfiguration": "ON", "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True}},
    )
    groups = {
        g["Properties"]["GroupName"] for g in resources(template, "AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == {"officer", "supervisor", "auditor", "admin"}
    stage = next(iter(resources(template, "AWS::ApiGateway::Stage").values()))["Properties"]
    assert stage["AccessLogSetting"] and stage["MethodSettings"][0]["DataTraceEnabled"] is False
    assert resources(template, "AWS::WAFv2::WebACLAssociation")


def test_search_domain_is_private_and_encrypted(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    template.has_resource_properties(
        "AWS::OpenSearchService::Domain",
        {
            "VPCOptions": Match.object_like({"SubnetIds": Match.any_value()}),
            "EncryptionAtRestOptions": Match.object_like({"Enabled": True}),
            "NodeToNodeEncryptionOptions": {"Enabled": True},
            "DomainEndpointOptions": Match.object_like({"EnforceHTTPS": True}),
            "AdvancedSecurityOptions": Match.object_like({"Enabled": True}),
        },
    )
    assert not any(
        r["Properties"].get("MapPublicIpOnLaunch") for r in resources(template, "AWS::EC2::Subnet").values()
    )
    assert not resources(template, "AWS::EC2::InternetGateway")


def test_topic_is_encrypted_and_fed_in_batches(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"BatchSize": 100, "MaximumBatchingWindowInSeconds": 300}
    )


def test_workflow_branches_retries_and_failure_path(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    machine = next(iter(resources(template, "AWS::StepFunctions::StateMachine").values()))
    text = json.dumps(machine["Properties"]["DefinitionString"])  # an Fn::Join of the ASL JSON
    for state in ("Search", "Decide", "Enroll", "OpenCase", "NotifyOfficers", "RecordFailure", "Failed"):
        assert f'\\"{state}\\"' in text
    assert "TransientError" in text and "BackoffRate" in text and "PermanentError" in text
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}


def test_every_acknowledged_nag_finding_has_a_reason() -> None:
    from face_dedup_infra import nag

    assert nag.STACK_WIDE
    assert all(len(reason) > 25 for reason in nag.STACK_WIDE.values())


def test_an_unacknowledged_finding_fails_synthesis(
    layers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from face_dedup_infra import nag

    monkeypatch.setattr(nag, "STACK_WIDE", {k: v for k, v in nag.STACK_WIDE.items() if k != "L1"})
    app, _ = build_app(str(tmp_path / "cdk.out"), {"face-dedup:layers-dir": str(layers)})
    with pytest.raises(Exception, match="AwsSolutions-L1"):
        app.synth()


def test_log_groups_encrypted_waf_rate_limited_and_logged(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    groups = resources(template, "AWS::Logs::LogGroup")
    assert groups and all("KmsKeyId" in g["Properties"] for g in groups.values())
    acl = next(iter(resources(template, "AWS::WAFv2::WebACL").values()))
    rates = [r for r in acl["Properties"]["Rules"] if "RateBasedStatement" in r["Statement"]]
    assert rates and rates[0]["Action"] == {"Block": {}}
    logging = next(iter(resources(template, "AWS::WAFv2::LoggingConfiguration").values()))
    assert logging["Properties"]["RedactedFields"] == [
        {"SingleHeader": {"Name": "authorization"}},
        {"SingleHeader": {"Name": "x-capture-token"}},
    ]


def test_console_sign_in_has_no_implicit_flow_and_hides_user_existence(
    synthesized: tuple[Any, Template],
) -> None:
    _, template = synthesized
    client = next(iter(resources(template, "AWS::Cognito::UserPoolClient").values()))["Properties"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"
    assert "implicit" not in client.get("AllowedOAuthFlows", [])
    assert not any("example.com" in url for url in client.get("CallbackURLs", []))


def test_no_payload_in_traces_or_execution_logs(synthesized: tuple[Any, Template]) -> None:
    _, template = synthesized
    for function in resources(template, "AWS::Lambda::Function").values():
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        if "FACE_DEDUP_FUNCTION" in env:
            assert env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
            assert env["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    machine = next(iter(resources(template, "AWS::StepFunctions::StateMachine").values()))
    assert machine["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is False


def test_console_page_and_assets_come_from_a_bucket_without_a_function(
    synthesized: tuple[Any, Template],
) -> None:
    _, template = synthesized
    public = [
        m
        for path, m in method_paths(template).values()
        if m["AuthorizationType"] == "NONE" and m["HttpMethod"] == "GET" and not path.startswith("/capture")
    ]
    assert len(public) == 2  # GET / and GET /static/{name}
    for method in public:
        assert method["Integration"]["Type"] == "AWS"  # S3, not a Lambda proxy
        assert ":s3:path/" in json.dumps(method["Integration"]["Uri"])


def test_console_from_the_bucket_carries_its_security_policy_and_headers(
    synthesized: tuple[Any, Template],
) -> None:
    """S3 sends no security headers: the deployed page holds its CSP (no inline code, calls only
    to its own origin, faces only from the faces bucket) and API Gateway adds the rest."""
    stack, template = synthesized
    page = json.dumps(stack.resolve(stack.review.console_page()))
    csp = page[page.index("Content-Security-Policy") :]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "https:;" not in csp and "https: " not in csp
    assert "connect-src 'self';" in csp  # no hosted UI without callback URLs
    faces = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageFaces"))
    assert faces in csp.split("connect-src")[0]  # img-src names the faces bucket
    public = [
        m
        for path, m in method_paths(template).values()
        if m["AuthorizationType"] == "NONE" and m["HttpMethod"] == "GET" and not path.startswith("/capture")
    ]
    for method in public:
        (ok,) = [r for r in method["Integration"]["IntegrationResponses"] if r["StatusCode"] == "200"]
        headers = ok["ResponseParameters"]
        assert headers["method.response.header.X-Frame-Options"] == "'DENY'"
        assert headers["method.response.header.X-Content-Type-Options"] == "'nosniff'"
        assert headers["method.response.header.Cache-Control"] == "'no-store'"


def test_capture_page_files_come_from_the_bucket_as_bytes_and_fit_api_gateway(
    synthesized: tuple[Any, Template],
) -> None:
    from face_dedup_api.capture import ORT_FILES

    _, template = synthesized
    files = {
        path: m
        for path, m in method_paths(template).values()
        if path.startswith("/capture/") and m["Integration"]["Type"] == "AWS"
    }
    assert set(files) == {
        "/capture/static/{name}",
        "/capture/model.onnx",
        *(f"/capture/ort/{n}" for n in ORT_FILES),
    }
    for path, method in files.items():
        assert method["AuthorizationType"] == "NONE" and ":s3:path/" in json.dumps(
            method["Integration"]["Uri"]
        )
        ok = next(r for r in method["Integration"]["IntegrationResponses"] if r["StatusCode"] == "200")
        # the detector and the wasm stay bytes whatever the browser's Accept header says
        assert (ok.get("ContentHandling") == "CONVERT_TO_BINARY") is path.endswith((".wasm", ".onnx"))
        assert ok["ResponseParameters"]["method.response.header.Content-Encoding"] == (
            "integration.response.header.Content-Encoding"
        )
    api = next(iter(resources(template, "AWS::ApiGateway::RestApi").values()))["Properties"]
    assert {"application/wasm", "application/octet-stream"} <= set(api["BinaryMediaTypes"])
    metadata = [
        d["Properties"].get("SystemMetadata", {})
        for d in resources(template, "Custom::CDKBucketDeployment").values()
    ]
    assert {"content-type": "application/wasm", "content-encoding": "gzip"} in metadata
    assert not any(
        path.startswith("/capture/upload") and path != "/capture/upload-url"
        for path in dict(method_paths(template).values())
    )  # one machine's direct upload route is not routed in the cloud
