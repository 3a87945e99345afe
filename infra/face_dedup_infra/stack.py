from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from face_dedup_infra.config import DeploymentConfig
from face_dedup_infra.constructs.encryption import Encryption
from face_dedup_infra.constructs.functions import Functions
from face_dedup_infra.constructs.ingest_queue import CaseNotificationQueue, IngestQueue
from face_dedup_infra.constructs.monitoring import Monitoring
from face_dedup_infra.constructs.network import Network
from face_dedup_infra.constructs.notifications import Notifications
from face_dedup_infra.constructs.review_api import ReviewApi
from face_dedup_infra.constructs.search import SearchDomain
from face_dedup_infra.constructs.storage import Storage
from face_dedup_infra.constructs.tables import Tables
from face_dedup_infra.constructs.workflow import DedupWorkflow


class FaceDedupStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        key = Encryption(self, "Encryption").key
        network = Network(self, "Network", log_key=key)
        storage = Storage(self, "Storage", key=key, retention_days=config.retention_days)
        tables = Tables(self, "Tables", key=key)
        notifications = Notifications(self, "Notifications", key=key, email=config.alarm_email)
        search = SearchDomain(
            self,
            "Search",
            vpc=network.vpc,
            security_group=network.index_sg,
            key=key,
            instance_type=config.opensearch_instance_type,
            data_nodes=config.opensearch_data_nodes,
        )
        table_names = {f"FACE_DEDUP_TABLE_{role.upper()}": t.table_name for role, t in tables.tables.items()}
        environment = {
            "FACE_DEDUP_MODEL_PACK": config.model_pack,
            "FACE_DEDUP_MODELS_DIR": "/opt/models",
            "FACE_DEDUP_DATA_DIR": "/tmp/face-dedup",  # noqa: S108 - scratch only; nothing persistent lives there
            "FACE_DEDUP_TARGET_FPIR": config.target_fpir,
            "FACE_DEDUP_INDEX_BACKEND": "opensearch",
            "FACE_DEDUP_STORE_BACKEND": "dynamodb",
            "FACE_DEDUP_BLOB_BACKEND": "s3",
            "FACE_DEDUP_NOTIFIER_BACKEND": "sqs",  # queued; the digest function tells officers (SNS)
            "FACE_DEDUP_AWS_REGION": self.region,
            "FACE_DEDUP_S3_BUCKET": storage.faces.bucket_name,
            "FACE_DEDUP_KMS_KEY_ID": key.key_arn,
            "FACE_DEDUP_SNS_TOPIC_ARN": notifications.topic.topic_arn,
            "FACE_DEDUP_OPENSEARCH_URL": f"https://{search.domain.domain_endpoint}",
            "FACE_DEDUP_OPENSEARCH_AUTH": "sigv4",
            "FACE_DEDUP_UPLOADS_BUCKET": storage.uploads.bucket_name,
            **table_names,
        }
        functions = Functions(
            self,
            "Functions",
            layers_dir=config.layers_dir,
            environment=environment,
            vpc=network.vpc,
            index_security_group=network.functions_sg,
        )
        queue = IngestQueue(
            self, "Ingest", uploads=storage.uploads, function_timeout=functions.ingest.timeout
        )  # type: ignore[arg-type]
        functions.consume(queue.queue)
        workflow = DedupWorkflow(
            self,
            "Workflow",
            search=functions.search,
            complete=functions.complete,
            notify=functions.notify,
            record_failure=functions.record_failure,
        )
        functions.ingest.add_environment(
            "FACE_DEDUP_STATE_MACHINE_ARN", workflow.state_machine.state_machine_arn
        )

        # Least privilege, per function.
        audit = tables.tables["audit"]
        append_audit = iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[audit.table_arn])
        for function in (
            functions.ingest,
            functions.search,
            functions.complete,
            functions.notify,
            functions.record_failure,
            functions.api,
        ):
            function.add_to_role_policy(append_audit)  # the audit log: append only, never update/delete
        storage.uploads.grant_read(functions.ingest)
        storage.faces.grant_put(functions.ingest)
        workflow.state_machine.grant_start_execution(functions.ingest)
        for role in ("imports", "staged", "records"):
            tables.tables[role].grant_read_write_data(functions.ingest)
        for role in ("imports", "staged", "records", "cases"):
            tables.tables[role].grant_read_write_data(functions.complete)
            tables.tables[role].grant_read_data(functions.search)
        for role in ("imports", "staged"):
            tables.tables[role].grant_read_write_data(functions.record_failure)
        storage.faces.grant_delete(functions.record_failure)
        storage.faces.grant_read(functions.record_failure)
        search.domain.grant_read_write(functions.index_client_role)
        search.domain.add_access_policies(
            iam.PolicyStatement(
                principals=[functions.index_client_role],
                actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete"],
                resources=[f"{search.domain.domain_arn}/*"],
            )
        )

        # The review API: reads and decides cases, verifies 1:1, presigns uploads, erases.
        for role in ("records", "cases", "imports", "staged"):
            tables.tables[role].grant_read_write_data(functions.api)
        audit.grant(functions.api, "dynamodb:Query")  # auditors' export reads the log: still no update/delete
        storage.faces.grant_read(functions.api)
        storage.faces.grant_delete(functions.api)  # erasure
        storage.uploads.grant_put(functions.api)  # presigned upload URLs are signed with this role
        self.review = ReviewApi(self, "Review", function=functions.api)

        # Case notifications: queued by the workflow and the API, sent to officers in batches.
        case_notes = CaseNotificationQueue(self, "CaseNotifications", key=key)
        functions.digest_notifications(case_notes.queue)
        for function in (functions.complete, functions.notify, functions.api, functions.ingest):
            case_notes.queue.grant_send_messages(function)
            function.add_environment("FACE_DEDUP_NOTIFICATION_QUEUE_URL", case_notes.queue.queue_url)
        notifications.topic.grant_publish(functions.digest)
        for function in (functions.complete, functions.notify, functions.digest):
            function.add_environment("FACE_DEDUP_REVIEW_LINK_BASE", f"{self.review.api.url}#case=")

        Monitoring(
            self,
            "Monitoring",
            dead_letters=queue.dead_letters,
            notification_dead_letters=case_notes.dead_letters,
            queue=queue.queue,
            state_machine=workflow.state_machine,
            functions=[
                functions.ingest,
                functions.search,
                functions.complete,
                functions.notify,
                functions.record_failure,
                functions.digest,
                functions.api,
            ],
            domain=search.domain,
        )
        self.functions = functions
        self.workflow = workflow
        self.tables = tables
        self.storage = storage
