from __future__ import annotations

from aws_cdk import Aspects, Fn, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from face_dedup import permissions, wiring
from face_dedup.deployment import CLOUD_SETTINGS
from face_dedup.table_schema import TABLES
from face_dedup_infra.config import DeploymentConfig
from face_dedup_infra.constructs.abis_broker import AbisBroker, AbisOptions
from face_dedup_infra.constructs.bulk_import import BulkImportJob, BulkImportOptions, add_bulk_functions
from face_dedup_infra.constructs.encryption import Encryption, EncryptLogs
from face_dedup_infra.constructs.functions import Functions
from face_dedup_infra.constructs.ingest_queue import CaseNotificationQueue, IngestQueue
from face_dedup_infra.constructs.migration import MigrationJob, MigrationOptions, add_shadow_functions
from face_dedup_infra.constructs.monitoring import Monitoring
from face_dedup_infra.constructs.network import Network
from face_dedup_infra.constructs.notifications import Notifications
from face_dedup_infra.constructs.reconcile import Reconcile
from face_dedup_infra.constructs.review_api import ReviewApi
from face_dedup_infra.constructs.search import SearchDomain
from face_dedup_infra.constructs.storage import UPLOADS_KEPT_DAYS, Storage
from face_dedup_infra.constructs.tables import PITR_DAYS, Tables
from face_dedup_infra.constructs.workflow import DedupWorkflow

# OpenSearch Service keeps its automated (hourly) snapshots 14 days; the period is not settable.
OPENSEARCH_SNAPSHOT_DAYS = 14


class FaceDedupStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self._zones = config.opensearch_zones  # read by availability_zones, below
        key = Encryption(self, "Encryption").key
        Aspects.of(self).add(EncryptLogs(key))
        network = Network(self, "Network", log_key=key, zones=config.opensearch_zones)
        storage = Storage(self, "Storage", key=key, retention_days=config.retention_days)
        tables = Tables(self, "Tables", key=key)
        notifications = Notifications(
            self, "Notifications", key=key, email=config.alarm_email, operations_email=config.operations_email
        )
        search = SearchDomain(
            self,
            "Search",
            vpc=network.vpc,
            security_group=network.index_sg,
            key=key,
            instance_type=config.opensearch_instance_type,
            data_nodes=config.opensearch_data_nodes,
            volume_gb=config.opensearch_volume_gb,
            dedicated_masters=config.opensearch_dedicated_masters,
            master_type=config.opensearch_master_type,
            zones=config.opensearch_zones,
        )
        case_notes = CaseNotificationQueue(self, "CaseNotifications", key=key)
        settings = {
            **CLOUD_SETTINGS,  # the AWS adapters, the models layer, scratch in /tmp (deployment.py)
            "model_pack": config.model_pack,
            "target_fpir": config.target_fpir,
            "opensearch_url": f"https://{search.domain.domain_endpoint}",
            "opensearch_method": config.method.name,
            "opensearch_encoding": config.method.encoding,
            "opensearch_shards": str(config.index_shards),
            "aws_region": self.region,
            "s3_bucket": storage.faces.bucket_name,
            "kms_key_id": key.key_arn,
            "uploads_bucket": storage.uploads.bucket_name,
            "audit_archive_bucket": storage.audit_archive.bucket_name,
            # what still holds an erased record, named on its receipt (days after the erasure)
            "backup_retention": ",".join(
                (
                    f"dynamodb-point-in-time-recovery={PITR_DAYS}",
                    f"opensearch-automated-snapshots={OPENSEARCH_SNAPSHOT_DAYS}",
                    f"uploads-bucket-original-photo={UPLOADS_KEPT_DAYS}",
                )
            ),
            "notification_queue_url": case_notes.queue.queue_url,
            "sns_topic_arn": notifications.topic.topic_arn,
            **{f"table_{role}": t.table_name for role, t in tables.tables.items()},
        }
        resources: dict[str, list[str]] = {
            wiring.INDEX: [search.domain.domain_arn, f"{search.domain.domain_arn}/*"],
            wiring.BLOBS: [storage.faces.bucket_arn, storage.faces.arn_for_objects("*")],
            wiring.UPLOADS: [storage.uploads.bucket_arn, storage.uploads.arn_for_objects("*")],
            wiring.ARCHIVE: [
                storage.audit_archive.bucket_arn,
                storage.audit_archive.arn_for_objects("audit/*"),
            ],
            wiring.NOTIFIER: [case_notes.queue.queue_arn],
            wiring.OFFICERS: [notifications.topic.topic_arn],
            permissions.KEY: [key.key_arn],
            **{
                # a table's secondary indexes only where it has some
                f"store:{role}": [t.table_arn, *([f"{t.table_arn}/index/*"] if TABLES[role][2] else [])]
                for role, t in tables.tables.items()
            },
        }
        # Bounded from the index's size: each search/complete holds one cluster request at a time.
        index_concurrency = config.concurrency_per_node * config.opensearch_data_nodes
        functions = Functions(
            self,
            "Functions",
            layers_dir=config.layers_dir,
            settings=settings,
            resources=resources,
            vpc=network.vpc,
            security_group=network.functions_sg,
            reserved={"search": index_concurrency, "complete": index_concurrency, "reconcile": 1},
            key=key,
        )
        ingest_timeout = functions.ingest.timeout
        assert ingest_timeout is not None  # every function is built with an explicit timeout
        queue = IngestQueue(self, "Ingest", uploads=storage.uploads, function_timeout=ingest_timeout)
        functions.consume(queue.queue, max_concurrency=max(2, index_concurrency))
        migration = MigrationOptions.from_context(self.node.try_get_context)
        # shadow mode (README, "Migrating between packs in the cloud"): refused at synth unless
        # the migration job is deployed and the pack is a shipped one other than the active one
        shadow_pack = migration.shadow_for(config.model_pack)
        shadow: dict[str, lambda_.Function] = {}
        if shadow_pack:
            settings["shadow_pack"] = shadow_pack  # before the index setup: it creates that index
            shadow = add_shadow_functions(functions, index_concurrency=index_concurrency)
        workflow = DedupWorkflow(
            self,
            "Workflow",
            search=functions.search,
            complete=functions.complete,
            notify=functions.notify,
            record_failure=functions.record_failure,
            shadow=shadow.get(wiring.MIGRATE_SHADOW),
        )
        functions.set_setting("state_machine_arn", workflow.state_machine.state_machine_arn)
        # The state machine exists only now: the one grant that cannot be in `resources` up front.
        functions.roles["ingest"].add_to_policy(
            iam.PolicyStatement(
                actions=sorted(
                    n.action
                    for n in permissions.needs(wiring.FUNCTIONS["ingest"])
                    if n.resource == wiring.WORKFLOW
                ),
                resources=[workflow.state_machine.state_machine_arn],
            )
        )
        abis = AbisOptions.from_context(self.node.try_get_context)
        if abis.enabled:  # MOSIP ABIS on Amazon MQ: off unless asked for (README)
            AbisBroker(
                self,
                "Abis",
                options=abis,
                functions=functions,
                vpc=network.vpc,
                functions_sg=network.functions_sg,
                key=key,
                alarm_topic=notifications.operations,
            )
        bulk = BulkImportOptions.from_context(self.node.try_get_context)
        # before the index setup: the bulk job's decide step reaches the index
        bulk_functions = (
            add_bulk_functions(functions, bulk, faces=storage.faces, uploads=storage.uploads)
            if bulk.enabled
            else {}
        )
        search.provision_index(
            functions.roles,
            settings,
            layer=functions.runtime_layer,
            security_group=network.functions_sg,
            records=tables.tables["records"],  # a deployment of another pack than the records' fails
            tenants=config.tenants,
        )
        network.add_endpoints_for(functions.roles)
        if migration.enabled:  # the model-pack migration job: off unless asked for (README)
            self.migration = MigrationJob(
                self,
                "Migration",
                options=migration,
                functions=functions,
                faces=storage.faces,
                access_logs=storage.access_logs,
                key=key,
                shadow=shadow or None,
                shadow_pack=shadow_pack,
            )
        if bulk.enabled:  # the bulk de-duplication job: off unless asked for (README)
            self.bulk_import = BulkImportJob(
                self,
                "BulkImport",
                options=bulk,
                built=bulk_functions,
                uploads=storage.uploads,
                access_logs=storage.access_logs,
                key=key,
            )

        self.review = ReviewApi(
            self,
            "Review",
            function=functions.api,
            callback_urls=config.callback_urls,
            image_bucket=storage.faces,
        )
        functions.digest_notifications(case_notes.queue)
        functions.archive_audit(tables.tables["audit"])
        functions.set_setting("review_link_base", f"{self.review.api.url}#case=")
        reconcile = Reconcile(self, "Reconcile", function=functions.reconcile, tenants=config.tenants)

        Monitoring(
            self,
            "Monitoring",
            dead_letters=queue.dead_letters,
            notification_dead_letters=case_notes.dead_letters,
            topic=notifications.operations,
            queue=queue.queue,
            state_machine=workflow.state_machine,
            functions=list(functions.by_name.values()),
            reconcile=reconcile,
            domain=search.domain,
            tenants=config.tenants,  # drift alarms per tenant (case and rejection rates)
        )
        self.functions = functions
        self.workflow = workflow
        self.tables = tables
        self.storage = storage

    @property
    def availability_zones(self) -> list[str]:
        """The zones the VPC (and so the index) may use. Tied to an account and region (the
        CDK CLI sets both from the caller's credentials), CDK looks the region's zones up; an
        environment-agnostic stack (a synth without credentials) gets only two from CDK, so a
        3-zone index (the production profile) could not be synthesized: here it gets as many
        as `opensearch-zones`, each `Fn::GetAZs` of the deploying region picked at deploy time."""
        if Token.is_unresolved(self.account) or Token.is_unresolved(self.region):
            zones = Fn.get_azs()
            return [Fn.select(i, zones) for i in range(max(2, getattr(self, "_zones", 2)))]
        return list(super().availability_zones)
