"""MOSIP ABIS in the cloud (optional: CDK context `face-dedup:mosip-abis=true`): an Amazon MQ
ActiveMQ broker, private in the VPC, and the ABIS consumer function (`functions/abis`) fed by
a Lambda event source mapping on MOSIP's request queue, replying on the response queue.

- The broker: no public endpoint, in the isolated subnets (one for a single instance, two for
  active/standby), encrypted with the stack's key, general and audit logs to CloudWatch, its
  user's password generated into Secrets Manager (the event source mapping and the function
  read the same secret). A request that fails every delivery lands in `DLQ.<request queue>`
  (ActiveMQ's individual dead-letter strategy), with the broker's cause on the message, from
  where an operator moves it back.
- The function: its role, network placement and settings come from its declaration
  (face_dedup.wiring.OPTIONAL_FUNCTIONS["abis"]), like every other function; the event source
  mapping's own needs (mq:DescribeBroker, the secret, the network interfaces it creates in the
  VPC) are added here. Batch size 1 and reserved concurrency 1: one request at a time, so an
  Identify runs after the Inserts queued before it (see the README for what Lambda's ActiveMQ
  poller does and does not guarantee about order).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, Duration, Fn, Stack, Validations
from aws_cdk import aws_amazonmq as mq
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct, IConstruct

from face_dedup import permissions, wiring
from face_dedup.deployment import ABIS_BROKER_SECRET_ENV, abis_env_name

# The ABIS settings' own defaults (face_dedup.mosip.config.AbisConfig; a test keeps them equal).
REQUEST_QUEUE = "mosip-to-abis"
RESPONSE_QUEUE = "abis-to-mosip"
TENANT = "mosip"
STOMP_SSL, OPENWIRE_SSL = 61614, 61617
BROKER_USER = "face-dedup-abis"
# What Lambda's Amazon MQ event source mapping needs in the function's role (AWS Lambda
# developer guide, "Using Lambda with Amazon MQ", execution role permissions); the network
# interface actions not in AWSLambdaVPCAccessExecutionRole are added here.
ESM_BROKER_ACTIONS = ("mq:DescribeBroker",)
ESM_SECRET_ACTIONS = ("secretsmanager:GetSecretValue",)
ESM_NETWORK_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
)
# The event source mapping of a broker in a VPC without NAT reaches these through endpoints.
ESM_ENDPOINTS = {
    "secretsmanager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "lambda": ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
}

# Failed deliveries of a request go to DLQ.<queue>, kept (persistent), never dropped.
_BROKER_CONFIG = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core">
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry queue="&gt;">
          <deadLetterStrategy>
            <individualDeadLetterStrategy queuePrefix="DLQ." useQueueForQueueMessages="true"
                                          processExpired="false"/>
          </deadLetterStrategy>
        </policyEntry>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
</broker>
"""


@dataclass(frozen=True)
class AbisOptions:
    """Context `face-dedup:mosip-abis*` (README, "MOSIP ABIS on AWS")."""

    enabled: bool = False
    active_standby: bool = False  # two brokers in two AZs (mq.m5.large or larger)
    instance_type: str = "mq.m5.large"
    engine_version: str = "5.18"
    request_queue: str = REQUEST_QUEUE
    response_queue: str = RESPONSE_QUEUE
    datashare_hosts: str = ""  # MOSIP's datashare host(s), reachable from the VPC
    client_cidr: str = ""  # MOSIP's network (peered or VPN): admitted to STOMP+SSL/OpenWire+SSL

    @classmethod
    def from_context(cls, get: Any) -> AbisOptions:
        def value(name: str, default: Any) -> Any:
            found = get(f"face-dedup:mosip-abis{name}")
            return default if found is None else found

        def flag(raw: Any) -> bool:
            return raw is True or str(raw).strip().lower() in ("1", "true", "yes")

        deployment = str(value("-deployment", "single"))
        if deployment not in ("single", "active-standby"):
            raise ValueError("face-dedup:mosip-abis-deployment must be single or active-standby")
        return cls(
            enabled=flag(value("", False)),
            active_standby=deployment == "active-standby",
            instance_type=str(value("-instance-type", "mq.m5.large")),
            engine_version=str(value("-engine-version", "5.18")),
            request_queue=str(value("-request-queue", REQUEST_QUEUE)),
            response_queue=str(value("-response-queue", RESPONSE_QUEUE)),
            datashare_hosts=str(value("-datashare-hosts", "")),
            client_cidr=str(value("-client-cidr", "")),
        )


class AbisBroker(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        options: AbisOptions,
        functions: Any,  # face_dedup_infra.constructs.functions.Functions
        vpc: ec2.IVpc,
        functions_sg: ec2.ISecurityGroup,
        key: kms.IKey,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.secret = secretsmanager.Secret(
            self,
            "BrokerUser",
            description="face-dedup ABIS: the Amazon MQ user (event source mapping and replies)",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=f'{{"username": "{BROKER_USER}"}}',
                generate_string_key="password",
                # Amazon MQ: 12+ characters, no commas, colons or equals signs
                exclude_punctuation=True,
                password_length=32,
            ),
        )
        self.security_group = ec2.SecurityGroup(
            self, "BrokerSg", vpc=vpc, description="the ABIS broker", allow_all_outbound=False
        )
        for port in (STOMP_SSL, OPENWIRE_SSL):
            self.security_group.add_ingress_rule(functions_sg, ec2.Port.tcp(port), "the ABIS function")
            # the event source mapping's network interfaces carry the broker's own group
            self.security_group.add_ingress_rule(self.security_group, ec2.Port.tcp(port), "Lambda's poller")
            if options.client_cidr:
                self.security_group.add_ingress_rule(
                    ec2.Peer.ipv4(options.client_cidr), ec2.Port.tcp(port), "MOSIP"
                )
        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids
        configuration = mq.CfnConfiguration(
            self,
            "BrokerConfig",
            name=f"{stack.stack_name}-abis"[:150],
            engine_type="ACTIVEMQ",
            engine_version=options.engine_version,
            data=base64.b64encode(_BROKER_CONFIG.encode()).decode(),
            description="face-dedup ABIS: dead letters per queue (DLQ.<queue>)",
        )
        # Amazon MQ writes its general and audit logs to /aws/amazonmq/broker/<id>/...
        logs.ResourcePolicy(
            self,
            "BrokerLogsPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("mq.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[
                        f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/amazonmq/*"
                    ],
                )
            ],
        )
        self.broker = mq.CfnBroker(
            self,
            "Broker",
            broker_name=f"{stack.stack_name}-abis"[:50],  # the alarm's Broker dimension too
            engine_type="ACTIVEMQ",
            engine_version=options.engine_version,
            auto_minor_version_upgrade=True,
            host_instance_type=options.instance_type,
            deployment_mode="ACTIVE_STANDBY_MULTI_AZ" if options.active_standby else "SINGLE_INSTANCE",
            publicly_accessible=False,
            subnet_ids=subnets[:2] if options.active_standby else subnets[:1],
            security_groups=[self.security_group.security_group_id],
            encryption_options=mq.CfnBroker.EncryptionOptionsProperty(
                use_aws_owned_key=False, kms_key_id=key.key_arn
            ),
            logs=mq.CfnBroker.LogListProperty(general=True, audit=True),
            configuration=mq.CfnBroker.ConfigurationIdProperty(
                id=configuration.attr_id, revision=configuration.attr_revision
            ),
            users=[
                mq.CfnBroker.UserProperty(
                    username=BROKER_USER,
                    # a CloudFormation dynamic reference: resolved at deploy, never in the template
                    password=self.secret.secret_value_from_json("password").unsafe_unwrap(),
                    console_access=False,
                )
            ],
        )

        spec = wiring.OPTIONAL_FUNCTIONS[wiring.ABIS]
        found = permissions.needs(spec)
        # reserved concurrency 1: at most one request in flight (an Identify after its Inserts)
        self.function = functions.add(spec, found | permissions.key_needs(found), 1)
        role: iam.Role = functions.roles[wiring.ABIS]
        role.add_to_policy(
            iam.PolicyStatement(actions=list(ESM_BROKER_ACTIONS), resources=[self.broker.attr_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=list(ESM_SECRET_ACTIONS), resources=[self.secret.secret_arn])
        )
        # EC2's Describe* and network interface creation take no resource-level restriction
        role.add_to_policy(iam.PolicyStatement(actions=list(ESM_NETWORK_ACTIONS), resources=["*"]))
        environment = {
            abis_env_name("broker_url"): Fn.join(",", self.broker.attr_stomp_endpoints),
            ABIS_BROKER_SECRET_ENV: self.secret.secret_arn,
            abis_env_name("request_queue"): options.request_queue,
            abis_env_name("response_queue"): options.response_queue,
            abis_env_name("tenant"): TENANT,
        }
        if options.datashare_hosts:
            environment[abis_env_name("datashare_hosts")] = options.datashare_hosts
        for name, value in environment.items():
            self.function.add_environment(name, value)
        self.mapping = lambda_.CfnEventSourceMapping(
            self,
            "RequestQueue",
            function_name=self.function.function_name,
            event_source_arn=self.broker.attr_arn,
            queues=[options.request_queue],
            batch_size=1,
            source_access_configurations=[
                lambda_.CfnEventSourceMapping.SourceAccessConfigurationProperty(
                    type="BASIC_AUTH", uri=self.secret.secret_arn
                )
            ],
            enabled=True,
        )
        # Lambda checks the role when the mapping is created: the grants must exist first.
        policy = role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.mapping.node.add_dependency(policy)
        for name, service in ESM_ENDPOINTS.items():
            endpoint = vpc.add_interface_endpoint(
                f"Abis{name.capitalize()}", service=service, private_dns_enabled=True
            )
            _ack(
                endpoint.node.find_child("SecurityGroup"),
                "EC23",
                f"The {name} interface endpoint's security group admits HTTPS from the VPC's own CIDR only "
                "(a token CloudFormation resolves, which the rule cannot read); the subnets have no "
                "internet route.",
            )
        # A request that failed every delivery waits in DLQ.<queue>: operators are told at once.
        broker_name = f"{stack.stack_name}-abis"[:50]
        self.dead_letters_alarm = cloudwatch.Alarm(
            self,
            "DeadLetters",
            metric=cloudwatch.Metric(
                namespace="AWS/AmazonMQ",
                metric_name="QueueSize",
                dimensions_map={"Broker": broker_name, "Queue": f"DLQ.{options.request_queue}"},
                statistic="Maximum",
                period=Duration.minutes(5),
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="MOSIP requests the ABIS could not answer wait in the dead-letter queue",
        )
        self.dead_letters_alarm.add_alarm_action(actions.SnsAction(alarm_topic))
        self.dead_letters_alarm.add_ok_action(actions.SnsAction(alarm_topic))
        _ack(
            self.secret,
            "SMG4",
            "The broker user's password: an ActiveMQ user change on Amazon MQ applies only at the "
            "broker's reboot, so a scheduled rotation would leave the broker and the secret apart until "
            "then. Rotate by updating the secret and rebooting the broker in a maintenance window (README).",
        )


def _ack(target: IConstruct, rule: str, reason: str) -> None:
    """A cdk-nag finding acknowledged where it arises (as face_dedup_infra.nag does)."""
    Validations.of(target).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))
