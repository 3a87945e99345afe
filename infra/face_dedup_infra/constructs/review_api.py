from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from face_dedup_api.capture_files import ORT_FILES
from face_dedup_infra.constructs.capture_assets import stage_capture_assets

ROLES = ("officer", "supervisor", "auditor", "admin")
STATIC_DIR = Path(__file__).resolve().parents[3] / "src" / "face_dedup_api" / "static"
# Headers on the console's files served from the bucket (values without quotes or commas: API
# Gateway's static values are single-quoted strings).
STATIC_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ReviewApi(Construct):
    """The review API and console: API Gateway (REST) in front of the API function, every data
    route behind a Cognito user pool authorizer. Officers, supervisors, auditors and admins are
    Cognito groups; each user's tenant is an immutable custom attribute. The console page at
    `/` is static and public (it holds no data; its calls carry the user's token). WAF with
    AWS's common and known-bad-inputs rules fronts the stage; access logs are kept."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.IFunction,
        callback_urls: tuple[str, ...] = (),
        rate_limit_per_5min: int = 1000,
        image_bucket: s3.IBucket | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._image_bucket = image_bucket  # where the console's presigned face links point
        self._connect_origins: list[str] = []  # besides 'self': the hosted UI's token endpoint
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,  # officers are invited by the registry, never self-registered
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            custom_attributes={"tenant": cognito.StringAttribute(min_len=1, max_len=64, mutable=False)},
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for role in ROLES:
            cognito.CfnUserPoolGroup(
                self,
                f"{role.capitalize()}Group",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=role,
                description=f"face-dedup {role}s",
            )
        self.client = self.user_pool.add_client(
            "Console",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,  # a browser app: public client, authorization code with PKCE
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,  # sign-in never tells whether a user exists
            # Hosted UI sign-in: authorization code only (never the implicit flow), redirects only
            # to the console URLs the registry lists (context `callback-urls`); none listed: no OAuth.
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True, implicit_code_grant=False),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=list(callback_urls),
                logout_urls=list(callback_urls),
            )
            if callback_urls
            else None,
            disable_o_auth=not callback_urls,
        )
        # The hosted UI's domain and what the console needs to use it (code + PKCE, signin.js),
        # published beside the page as /static/console-config.json: no inline script.
        self.console_config: dict[str, str] = {"auth": "token"}
        if callback_urls:
            domain = self.user_pool.add_domain(
                "HostedUi",
                cognito_domain=cognito.CognitoDomainOptions(
                    domain_prefix=f"face-dedup-{Stack.of(self).account}"
                ),
            )
            self._connect_origins.append(domain.base_url())
            self.console_config = {
                "auth": "cognito",
                "authorize_url": f"{domain.base_url()}/oauth2/authorize",
                "token_url": f"{domain.base_url()}/oauth2/token",
                "client_id": self.client.user_pool_client_id,
                "redirect_uri": callback_urls[0],
                "scope": "openid email",
            }
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_YEAR)
        self.api = apigateway.RestApi(
            self,
            "Api",
            description="face-dedup review API and console",
            deploy_options=apigateway.StageOptions(
                stage_name="v1",
                tracing_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies may hold photos: never logged
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                throttling_rate_limit=50,
                throttling_burst_limit=100,
            ),
            cloud_watch_role=True,
            # image/* for photos; the capture page's detector and (gzip-encoded) wasm are bytes too
            binary_media_types=["image/*", "application/wasm", "application/octet-stream"],
        )
        self.authorizer = apigateway.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.user_pool]
        )
        integration = apigateway.LambdaIntegration(function)
        files, reader = self._serve_console_statically()
        proxy = self.api.root.add_resource("{proxy+}")
        proxy.add_method(
            "ANY",
            integration,
            authorizer=self.authorizer,
            authorization_type=apigateway.AuthorizationType.COGNITO,
        )
        self._serve_capture_page(integration, files, reader)
        acl = wafv2.CfnWebACL(
            self,
            "Firewall",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name="face-dedup-api", sampled_requests_enabled=False
            ),
            rules=[
                self._managed_rule("AWSManagedRulesCommonRuleSet", 0),
                self._managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 1),
                # per client address: a scripted client cannot exhaust the API or the index
                wafv2.CfnWebACL.RuleProperty(
                    name="RatePerAddress",
                    priority=2,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=rate_limit_per_5min, aggregate_key_type="IP"
                        )
                    ),
                    visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                        cloud_watch_metrics_enabled=True,
                        metric_name="RatePerAddress",
                        sampled_requests_enabled=False,
                    ),
                ),
            ],
        )
        # WAF's own log (the name prefix is WAF's rule); tokens are redacted.
        waf_logs = logs.LogGroup(
            self,
            "FirewallLogs",
            log_group_name=f"aws-waf-logs-face-dedup-{Stack.of(self).stack_name}",
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.RETAIN,
        )
        wafv2.CfnLoggingConfiguration(
            self,
            "FirewallLogging",
            resource_arn=acl.attr_arn,
            log_destination_configs=[
                Stack.of(self).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=waf_logs.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            # credentials never reach the firewall's log: the officers' token and the capture
            # link's token (its payload names the tenant and the application, in base64)
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": name})
                for name in ("authorization", "x-capture-token")
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "FirewallAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=acl.attr_arn,
        )

    def _serve_console_statically(self) -> tuple[s3.Bucket, iam.Role]:
        """`GET /` and `GET /static/{name}` straight from a private bucket through API Gateway:
        no function wakes (none in the VPC), no token needed for a page that holds no data, and
        the page's own script and style load (behind the authorizer they could not)."""
        bucket = s3.Bucket(
            self,
            "ConsoleFiles",
            encryption=s3.BucketEncryption.S3_MANAGED,  # public assets of the console, no data
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=False,
        )
        s3deploy.BucketDeployment(
            self,
            "ConsoleDeployment",
            sources=[
                s3deploy.Source.asset(str(STATIC_DIR), exclude=["capture", "capture/*", "console.html"]),
                s3deploy.Source.data("console.html", self.console_page()),
                s3deploy.Source.json_data("console-config.json", self.console_config),
            ],
            destination_bucket=bucket,
            exclude=["capture/*"],  # the capture page's files (below): neither uploaded nor pruned here
        )
        role = iam.Role(self, "ConsoleReader", assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"))
        bucket.grant_read(role)
        # S3 sends no security headers: the page and its files get them here (the page's CSP is
        # in the page itself, see console_page), as the API function's responses do (app.py).
        content_type = {
            "method.response.header.Content-Type": "integration.response.header.Content-Type",
            **{f"method.response.header.{name}": f"'{value}'" for name, value in STATIC_HEADERS.items()},
        }

        def from_bucket(key: str, parameters: dict[str, str] | None = None) -> apigateway.AwsIntegration:
            return apigateway.AwsIntegration(
                service="s3",
                integration_http_method="GET",
                path=f"{bucket.bucket_name}/{key}",
                options=apigateway.IntegrationOptions(
                    credentials_role=role,
                    request_parameters=parameters,
                    integration_responses=[
                        apigateway.IntegrationResponse(status_code="200", response_parameters=content_type),
                        apigateway.IntegrationResponse(status_code="404", selection_pattern="4\\d{2}"),
                    ],
                ),
            )

        responses = [
            apigateway.MethodResponse(
                status_code="200", response_parameters=dict.fromkeys(content_type, True)
            ),
            apigateway.MethodResponse(status_code="404"),
        ]
        self.api.root.add_method("GET", from_bucket("console.html"), method_responses=responses)
        self.api.root.add_resource("static").add_resource("{name}").add_method(
            "GET",
            from_bucket("{name}", {"integration.request.path.name": "method.request.path.name"}),
            request_parameters={"method.request.path.name": True},
            method_responses=responses,
        )
        return bucket, role

    def console_csp(self) -> str:
        """The console's policy in the cloud, as app.py's Dependencies.console_csp gives it on one
        machine: no inline code, calls only to its own origin (and the hosted UI's token endpoint),
        faces only from its own origin, blobs and the faces bucket (presigned links)."""
        images = ["'self'", "blob:"]
        if self._image_bucket is not None:
            # presigned links name the bucket either way, depending on the SDK's endpoint choice
            images += [
                f"https://{self._image_bucket.bucket_domain_name}",
                f"https://{self._image_bucket.bucket_regional_domain_name}",
            ]
        connect = ["'self'", *self._connect_origins]
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src {' '.join(images)}; connect-src {' '.join(connect)}; "
            "base-uri 'none'; form-action 'none'"
        )

    def console_page(self) -> str:
        """console.html with its CSP as a <meta> element: API Gateway's static header values are
        quoted strings that cannot carry the policy's own quotes. frame-ancestors, which a <meta>
        policy cannot hold, is covered by the X-Frame-Options header (STATIC_HEADERS)."""
        page = (STATIC_DIR / "console.html").read_text()
        marker = '<meta charset="utf-8">'
        if marker not in page:
            raise ValueError(f"console.html lost its {marker!r}: the CSP would not be placed first")
        meta = f'<meta http-equiv="Content-Security-Policy" content="{self.console_csp()}">'
        return page.replace(marker, f"{marker}\n{meta}", 1)

    def _serve_capture_page(
        self, integration: apigateway.LambdaIntegration, bucket: s3.Bucket, role: iam.Role
    ) -> None:
        """The selfie capture page (`/capture`, see face_dedup_api/capture.py) for applicants, who
        hold no Cognito account: the routes that check a capture token themselves skip the
        authorizer, the page's files come from the console's bucket (the wasm is too big for a
        function's answer), and `POST /capture/sessions` (issuing a token) stays staff-only.
        `POST /capture/upload` is not routed: in the cloud the photo goes to a presigned URL."""
        for folder in stage_capture_assets():
            s3deploy.BucketDeployment(
                self,
                f"CaptureDeployment{folder.path.name}",
                sources=[s3deploy.Source.asset(str(folder.path))],
                destination_bucket=bucket,
                content_type=folder.content_type,
                content_encoding=folder.content_encoding,
                prune=False,  # several deployments share the capture/ prefix
            )
        capture = self.api.root.add_resource("capture")
        public = apigateway.AuthorizationType.NONE
        # the page from the function: its CSP names the uploads bucket, known only at run time
        capture.add_method("GET", integration, authorization_type=public)
        capture.add_resource("config.json").add_method("GET", integration, authorization_type=public)
        capture.add_resource("outcome").add_method("GET", integration, authorization_type=public)
        capture.add_resource("upload-url").add_method("POST", integration, authorization_type=public)
        capture.add_resource("sessions").add_method(
            "POST",
            integration,
            authorizer=self.authorizer,
            authorization_type=apigateway.AuthorizationType.COGNITO,
        )
        passed = {
            f"method.response.header.{name}": f"integration.response.header.{name}"
            for name in ("Content-Type", "Content-Encoding")
        }
        fixed = {
            "method.response.header.Cache-Control": "'no-store'",
            "method.response.header.X-Content-Type-Options": "'nosniff'",
        }

        def from_bucket(key: str, *, binary: bool, parameters: dict[str, str] | None = None) -> None:
            resource: apigateway.IResource = capture
            for part in key.split("/")[1:]:
                resource = resource.get_resource(part) or resource.add_resource(part)
            resource.add_method(
                "GET",
                apigateway.AwsIntegration(
                    service="s3",
                    integration_http_method="GET",
                    path=f"{bucket.bucket_name}/{key}",
                    options=apigateway.IntegrationOptions(
                        credentials_role=role,
                        request_parameters=parameters,
                        integration_responses=[
                            apigateway.IntegrationResponse(
                                status_code="200",
                                response_parameters={**passed, **fixed},
                                # bytes stay bytes whatever the browser's Accept header says
                                content_handling=apigateway.ContentHandling.CONVERT_TO_BINARY
                                if binary
                                else None,
                            ),
                            apigateway.IntegrationResponse(status_code="404", selection_pattern="4\\d{2}"),
                        ],
                    ),
                ),
                request_parameters={"method.request.path.name": True} if parameters else None,
                method_responses=[
                    apigateway.MethodResponse(
                        status_code="200", response_parameters=dict.fromkeys([*passed, *fixed], True)
                    ),
                    apigateway.MethodResponse(status_code="404"),
                ],
            )

        from_bucket(
            "capture/static/{name}",
            binary=False,
            parameters={"integration.request.path.name": "method.request.path.name"},
        )
        from_bucket("capture/model.onnx", binary=True)
        for name in ORT_FILES:
            from_bucket(f"capture/ort/{name}", binary=name.endswith(".wasm"))

    @staticmethod
    def _managed_rule(name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name,
            priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS",
                    name=name,
                    # photos are uploaded through presigned S3 URLs, not the API: body limits apply
                )
            ),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=False
            ),
        )
