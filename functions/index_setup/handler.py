"""The deployment's index step: a CloudFormation custom resource (CDK's Provider framework)
calls this on every create and update of the stack. It runs as the domain's master user, inside
the VPC, and is the only thing that creates the index or changes its security mappings, so no
function ever does that at cold start and nothing is left to do by hand after a deployment."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from face_dedup.adapters.opensearch_index import provision
from face_dedup.bootstrap import build_cloud_store, build_search_index
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.pack_guard import check_deployment
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-index-setup")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = str(event.get("RequestType", "Create"))
    physical_id = "face-dedup-index"
    if request == "Delete":
        # The index holds the registry's templates: a stack deletion keeps it (and the domain).
        return {"PhysicalResourceId": physical_id}
    properties = event.get("ResourceProperties") or {}
    role_arns = {
        "face_dedup_read": list(properties.get("ReadRoleArns") or []),
        "face_dedup_write": list(properties.get("WriteRoleArns") or []),
    }
    settings = Settings.load()
    # Before any index is created: a deployment of another pack than the registry's templates
    # are in fails here, and CloudFormation rolls it back (pack_guard.check_deployment).
    tenants = [valid_tenant(str(t)) for t in properties.get("Tenants") or []]
    if tenants:
        store = build_cloud_store(settings)
        check_deployment(store, tenants, active=settings.model_pack, shadow=settings.shadow_pack)
    # a migration's shadow pack (deployed with -c face-dedup:shadow-pack): its own index, of its
    # own dimension, created beside the active pack's and readable/writable by the same roles
    shadow = (
        [build_search_index(settings.with_overrides(model_pack=settings.shadow_pack, shadow_pack=""))]
        if settings.shadow_pack
        else []
    )
    result = provision(build_search_index(settings), role_arns, also=shadow)
    logger.info(
        "index provisioned",
        index_created=result["created"],
        shadow_indexes=len(shadow),
        roles_mapped=result["mapped"],
    )
    return {"PhysicalResourceId": physical_id, "Data": {"Created": str(result["created"])}}
