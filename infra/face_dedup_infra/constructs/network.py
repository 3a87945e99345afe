from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct


class Network(Construct):
    """A private network for the index and the functions that query it: isolated subnets (no
    route to the internet at all), AWS services through VPC endpoints, flow logs on."""

    def __init__(self, scope: Construct, construct_id: str, *, log_key: object) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
        )
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_YEAR)
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group)
        )
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        for name, service in (("Sns", ec2.InterfaceVpcEndpointAwsService.SNS),):
            self.vpc.add_interface_endpoint(name, service=service, private_dns_enabled=True)
        self.functions_sg = ec2.SecurityGroup(
            self,
            "FunctionsSg",
            vpc=self.vpc,
            description="functions that query the index",
            allow_all_outbound=True,
        )
        self.index_sg = ec2.SecurityGroup(
            self, "IndexSg", vpc=self.vpc, description="the OpenSearch domain", allow_all_outbound=False
        )
        self.index_sg.add_ingress_rule(self.functions_sg, ec2.Port.tcp(443), "HTTPS from the functions only")
