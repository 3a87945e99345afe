"""cdk-nag AwsSolutions on the whole app. Findings fail the synth unless acknowledged here,
each with the reason it is acceptable or the control that compensates."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks


def _ack(scope: cdk.Stack, path: str | None, rule: str, reason: str) -> None:
    target = scope if path is None else scope.node.find_child(path.split("/")[0])
    for part in path.split("/")[1:] if path else []:
        target = target.node.find_child(part)
    cdk.Validations.of(target).acknowledge(
        cdk.Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason)
    )


# Stack-wide: patterns CDK's own grant methods and helper functions produce.
STACK_WIDE = {
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
        "Lambda's basic execution policy only allows writing the function's own CloudWatch logs; "
        "a hand-written copy would be identical."
    ),
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]": (
        "Functions in the VPC need to create and delete their network interfaces; this AWS policy "
        "grants exactly that and nothing else."
    ),
    "L1": (
        "Python 3.12 is pinned on purpose: the runtime and model layers are built and size-checked for "
        "exactly this runtime and arm64 (layers/), and the test suite runs on it. Upgrading is a "
        "deliberate change with a layer rebuild, not a drift."
    ),
    "IAM5[Action::kms:GenerateDataKey*]": (
        "CDK's grant for the stack's customer-managed key (S3/SQS/SNS/DynamoDB encryption); scoped to "
        "that one key's ARN."
    ),
    "IAM5[Action::kms:ReEncrypt*]": (
        "CDK's encrypt/decrypt grant on the one customer-managed key, scoped to its ARN."
    ),
    "IAM5[Action::kms:List*]": "CDK's key grant for the state machine's logging, scoped to the one key.",
    "IAM5[Action::kms:Describe*]": "CDK's key grant for the state machine's logging, scoped to the one key.",
    "IAM5[Action::s3:GetObject*]": (
        "Read grant on one bucket's objects (versions included), from CDK's grant_read."
    ),
    "IAM5[Action::s3:GetBucket*]": "Bucket metadata reads on one bucket, from CDK's grant_read.",
    "IAM5[Action::s3:List*]": (
        "Listing one bucket (needed to page a record's photos at erasure), CDK's grant_read."
    ),
    "IAM5[Action::s3:Abort*]": "Abort multipart uploads on one bucket's objects, part of CDK's grant_put.",
    "IAM5[Action::s3:DeleteObject*]": (
        "The failure path deletes a failed input's photos, all versions (erasure really erases); one bucket."
    ),
    "IAM5[Resource::<StorageFaces73E824C2.Arn>/*]": "Objects of the faces bucket only.",
    "IAM5[Resource::<StorageUploadsBDC5E374.Arn>/*]": "Objects of the uploads bucket only.",
    "IAM5[Resource::<ReviewConsoleFilesB4EDE12B.Arn>/*]": (
        "The console's static files (HTML, script, style; no data): read by API Gateway, written by "
        "CDK's deployment of them."
    ),
    "IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]": (
        "CDK's bootstrap asset bucket, read by CDK's BucketDeployment to copy the console's files."
    ),
    "IAM5[Resource::<StorageAuditArchiveB1A82667.Arn>/audit/*]": (
        "PutObject under audit/ in the Object Lock archive only (entries are named by tenant and event)."
    ),
    "IAM5[Resource::<TablesImports9922BEF2.Arn>/index/*]": "The imports table's own secondary indexes.",
    "IAM5[Resource::<TablesRecords353FBC94.Arn>/index/*]": "The records table's own secondary indexes.",
    "IAM5[Resource::<TablesCases698FA840.Arn>/index/*]": "The cases table's own secondary indexes.",
    "IAM5[Resource::<SearchDomain62FD613E.Arn>/*]": (
        "HTTP access to the one search domain's paths, for the one role the domain trusts; fine-grained "
        "access control inside the domain limits it further."
    ),
    "IAM5[Resource::<FunctionsSearch58B3D018.Arn>:*]": (
        "The state machine invokes this function's versions/aliases."
    ),
    "IAM5[Resource::<FunctionsCompleteE92EC1AE.Arn>:*]": (
        "The state machine invokes this function's versions/aliases."
    ),
    "IAM5[Resource::<FunctionsNotifyE13C3CB5.Arn>:*]": (
        "The state machine invokes this function's versions/aliases."
    ),
    "IAM5[Resource::<FunctionsRecordFailure6674325C.Arn>:*]": (
        "The state machine invokes this function's versions/aliases."
    ),
    "IAM5[Resource::<FunctionsReconcileA7FC4E8E.Arn>:*]": (
        "The nightly schedule invokes the reconcile function's versions/aliases."
    ),
    "IAM5[Resource::<SearchIndexSetupE1612361.Arn>:*]": (
        "CDK's custom-resource provider framework invokes the index-setup function's versions."
    ),
    "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]": (
        "API Gateway's account-level role for writing its access and execution logs; this AWS policy is "
        "exactly that."
    ),
    "IAM5[Resource::*]": (
        "Only actions that AWS defines without resource-level permissions: X-Ray PutTraceSegments/"
        "PutTelemetryRecords (tracing), CloudWatch Logs delivery for the state machine, "
        "PutBucketNotification for CDK's notification helper, log resource policies for OpenSearch logs."
    ),
}


def apply_nag(app: cdk.App, stack: cdk.Stack) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    for rule, reason in STACK_WIDE.items():
        _ack(stack, None, rule, reason)
    if not any(cdk.Token.is_unresolved(v) for v in (stack.account, stack.region, stack.partition)):
        # Tied to an account and region (the CDK CLI with credentials): the same asset bucket,
        # named with them instead of tokens, as cdk-nag then reports it.
        _ack(
            stack,
            None,
            f"IAM5[Resource::arn:{stack.partition}:s3:::cdk-hnb659fds-assets-{stack.account}-{stack.region}/*]",
            STACK_WIDE[
                "IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]"
            ],
        )
    _ack(
        stack,
        "Search/Domain",
        "OS3",
        "The domain has no public endpoint: it lives in isolated subnets and its security group admits "
        "HTTPS only from the functions' security group. IP allow-lists add nothing inside a VPC.",
    )
    _ack(
        stack,
        "Search/Domain",
        "OS4",
        "Two data nodes across two AZs; dedicated masters are a sizing choice for clusters above ~10 nodes "
        "(set opensearch-data-nodes and enable them for large registries). The index can be rebuilt from "
        "the DynamoDB templates at any time.",
    )
    for path in ("Review/Api/Default/GET", "Review/Api/Default/static/{name}/GET"):
        for rule in ("APIG4", "COG4"):
            _ack(
                stack,
                path,
                rule,
                "Only the console's static files (GET /, GET /static/{name}) are public: HTML, script and "
                "style from a bucket, no data, no function. Every data route ({proxy+}) requires a Cognito "
                "user pool token.",
            )
    checked_in_function = (
        "The selfie capture page's applicants hold no Cognito account: this route checks the capture "
        "token (HMAC-signed, one tenant and application, 15 minutes) in the function, which refuses "
        "without it (face_dedup_api/capture.py). Issuing a token (POST /capture/sessions) needs Cognito."
    )
    capture_files = (
        "The selfie capture page's static files (script, style, onnxruntime-web, the public YuNet "
        "detector) from the console's bucket: no data, no function."
    )
    capture_page = (
        "The selfie capture page's HTML (its CSP names the uploads bucket) and config.json (the "
        "server's quality thresholds): no data about anyone, for applicants without a Cognito account."
    )
    for path, reason in (
        ("capture/GET", capture_page),
        ("capture/config.json/GET", capture_page),
        ("capture/outcome/GET", checked_in_function),
        ("capture/upload-url/POST", checked_in_function),
        ("capture/static/{name}/GET", capture_files),
        ("capture/model.onnx/GET", capture_files),
        ("capture/ort/ort.wasm.bundle.min.mjs/GET", capture_files),
        ("capture/ort/ort-wasm-simd-threaded.mjs/GET", capture_files),
        ("capture/ort/ort-wasm-simd-threaded.wasm/GET", capture_files),
    ):
        for rule in ("APIG4", "COG4"):
            _ack(stack, f"Review/Api/Default/{path}", rule, reason)
    _ack(
        stack,
        "Review/ConsoleFiles",
        "S1",
        "The console's static files (no data) are read only by API Gateway, whose access log records "
        "every request for them.",
    )
    _ack(
        stack,
        "Review/Api",
        "APIG2",
        "The API is a Lambda proxy; each route validates its path, query and body in the function "
        "(Powertools with pydantic models) and answers 4xx with the reason, as the API tests show.",
    )
    for endpoint in ("Sqs", "Xray"):
        _ack(
            stack,
            f"Network/Vpc/{endpoint}/SecurityGroup",
            "EC23",
            f"The {endpoint} interface endpoint's security group admits HTTPS from the VPC's own CIDR only "
            "(a token CloudFormation resolves, which the rule cannot read); the subnets have no internet "
            "route.",
        )
