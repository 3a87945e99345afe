from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from face_dedup import permissions, wiring

# botocore service name -> endpoint (S3 and DynamoDB: free gateway endpoints).
GATEWAY = {"s3": ec2.GatewayVpcEndpointAwsService.S3, "dynamodb": ec2.GatewayVpcEndpointAwsService.DYNAMODB}
INTERFACE = {
    "sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "stepfunctions": ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
    "kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "xray": ec2.InterfaceVpcEndpointAwsService.XRAY,
}


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class Network(Construct):
    """A private network for the index and the functions that query it: isolated subnets (no
    route to the internet at all), AWS services through VPC endpoints, flow logs on. One subnet
    per zone the index spans (`zones`, the domain's zone awareness): OpenSearch wants a subnet
    for each of its zones, no more and no fewer."""

    def __init__(self, scope: Construct, construct_id: str, *, log_key: object, zones: int = 2) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=zones,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
        )
        if len(self.vpc.availability_zones) < zones:  # an env-specific stack in a region with fewer AZs
            raise ValueError(
                f"face-dedup:opensearch-zones={zones}, but the stack's region offers "
                f"{len(self.vpc.availability_zones)} availability zones "
                f"({', '.join(self.vpc.availability_zones)}): choose fewer zones or another region"
            )
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_YEAR)
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group)
        )
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

    def add_endpoints_for(self, _roles: object = None) -> None:
        """An endpoint for every AWS service a function in the VPC calls, from the functions'
        declarations (face_dedup.wiring + permissions): the subnets have no internet route, so
        a service without an endpoint is unreachable. The index itself is in the VPC."""
        needed: set[str] = set()
        for spec in wiring.FUNCTIONS.values():
            if spec.in_vpc:
                needed |= permissions.services(spec) - {"es"}
                needed.add("xray")  # active tracing sends segments from the function's network
        for service in sorted(needed):
            if service in GATEWAY:
                self.vpc.add_gateway_endpoint(camel(service), service=GATEWAY[service])
            else:
                self.vpc.add_interface_endpoint(
                    camel(service), service=INTERFACE[service], private_dns_enabled=True
                )
