"""What each cloud function calls: one declaration, read by the bootstrap (which adapters a
function builds, and which of their methods it may call) and by the CDK app (each function's
role, grants, network placement, VPC endpoints and environment). Code and infrastructure read
the same table, so they cannot drift; tests/infra checks the synthesized template against it.

Pure Python on purpose (no boto3, no CDK, no numpy): the CDK app imports it at synth time.

A function declares, per port, the port methods it calls. The AWS actions those methods need
are not written here: `face_dedup.permissions` reads them from the adapters' source code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The ports a function can use, and what backs each one in the cloud.
INDEX = "index"  # OpenSearch domain (VPC only)
STORE = "store"  # DynamoDB tables
BLOBS = "blobs"  # the faces bucket
UPLOADS = "uploads"  # the uploads bucket (read by ingest; presigned puts by the API)
NOTIFIER = "notifier"  # the case-notification queue (SQS)
OFFICERS = "officers"  # the officers' case topic (SNS), written by the digest only
WORKFLOW = "workflow"  # the Step Functions state machine, started by ingest only
ARCHIVE = "archive"  # the audit archive bucket (S3 Object Lock, compliance mode)
# drift.py's aggregates as CloudWatch metrics: EMF lines in the function's own log (no API call,
# so no IAM action and no endpoint), declared by every function that commits a decision.
DRIFT = "drift"

# Every method of a port, for functions that serve every use case (the review API).
ALL = ("*",)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str  # module path under functions/ and attribute, as Lambda's `handler`
    code_dir: str
    uses: dict[str, tuple[str, ...]]  # port -> the port methods the function calls
    engine: bool = False  # loads the face models (the models layer, memory)
    settings: tuple[str, ...] = ()  # Settings fields it reads beyond its ports' own
    memory: int = 512
    timeout_s: int = 30
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def in_vpc(self) -> bool:
        """The index is reachable only inside the VPC; nothing else needs it."""
        return INDEX in self.uses

    def methods(self, port: str) -> tuple[str, ...]:
        return self.uses.get(port, ())


# Settings each port's adapter reads (the CDK app puts exactly these in the environment).
PORT_SETTINGS: dict[str, tuple[str, ...]] = {
    INDEX: (
        "index_backend",
        "opensearch_url",
        "opensearch_auth",
        "opensearch_index",
        "opensearch_method",  # capacity.default_method for the registry size (issue 15)
        "opensearch_encoding",
        "opensearch_shards",
        "aws_region",
    ),
    STORE: (
        "store_backend",
        "aws_region",
        "table_records",
        "table_cases",
        "table_imports",
        "table_audit",
        "table_staged",
    ),
    BLOBS: ("blob_backend", "s3_bucket", "kms_key_id", "aws_region"),
    UPLOADS: ("uploads_bucket", "kms_key_id", "aws_region"),
    NOTIFIER: ("notifier_backend", "notification_queue_url", "aws_region"),
    OFFICERS: ("sns_topic_arn", "aws_region"),
    WORKFLOW: ("state_machine_arn", "aws_region"),
    ARCHIVE: ("audit_archive_bucket", "kms_key_id", "aws_region"),
    DRIFT: (),  # the namespace is fixed (adapters/emf_drift.py); nothing to configure
}
# Read by every function that builds the service (thresholds, model pack, scratch space).
SERVICE_SETTINGS = ("model_pack", "target_fpir", "data_dir", "models_dir")

STAGED_READS = ("get_staged", "get_import_item")

FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            name="ingest",
            handler="handler.handler",
            code_dir="ingest",
            uses={
                STORE: ("get_import_item", "commit", "stage", "append_audit"),
                BLOBS: ("put",),
                UPLOADS: ("get", "get_limited"),  # the manifest; the photo, at most the size limit
                WORKFLOW: ("start",),
                DRIFT: ("add",),  # rejections at ingest are final decisions
            },
            engine=True,
            settings=SERVICE_SETTINGS,
            # One vCPU (1769 MB): the pipeline runs on one thread (process CPU = 1.01x the
            # thread's, bench/ingest_cold_start.py --per-photo), so 3008 MB's ~1.7 vCPU went
            # unused; peak RSS was 335 MB on a 39 MP photo (BENCHMARKS.md, "Lambda sizing").
            memory=1769,
            timeout_s=60,
            description="upload -> photo checks, template, staged; starts the workflow",
        ),
        FunctionSpec(
            name="search",
            handler="handler.search",
            code_dir="workflow",
            # reads only: the index and the store
            uses={
                INDEX: ("count", "search", "search_above"),
                STORE: (*STAGED_READS, "find_application_records", "describe_records"),
            },
            settings=SERVICE_SETTINGS,
            memory=1024,
            description="workflow: 1:N search and the decision (reads only)",
        ),
        FunctionSpec(
            name="complete",
            handler="handler.complete",
            code_dir="workflow",
            uses={
                INDEX: ("count", "search", "search_above", "add"),
                STORE: (
                    *STAGED_READS,
                    "commit",
                    "drop_staged",
                    "describe_records",
                    "find_application_records",
                    "are_distinct",
                    "open_case",
                ),
                NOTIFIER: ("notify",),  # a concurrent-enrollment case
                BLOBS: ("delete_prefix",),  # a verified selfie's photos are not kept
                DRIFT: ("add",),  # enrolled, review, duplicate, verified
            },
            settings=(*SERVICE_SETTINGS, "review_link_base"),
            memory=1024,
            description="workflow: enroll or open a case; index write; concurrency re-check",
        ),
        FunctionSpec(
            name="notify",
            handler="handler.notify",
            code_dir="workflow",
            uses={NOTIFIER: ("notify",)},
            settings=(*SERVICE_SETTINGS, "review_link_base"),
            memory=256,
            timeout_s=10,
            description="workflow: queue the case notification for the digest",
        ),
        FunctionSpec(
            name="record_failure",
            handler="handler.record_failure",
            code_dir="workflow",
            uses={
                STORE: (*STAGED_READS, "commit", "drop_staged"),
                BLOBS: ("delete_prefix",),
                DRIFT: ("add",),  # a failed workflow's rejection
            },
            settings=SERVICE_SETTINGS,
            memory=512,
            description="workflow: record the failure as a rejected item; drop the staged photos",
        ),
        FunctionSpec(
            name="digest",
            handler="handler.handler",
            code_dir="digest",
            uses={OFFICERS: ("notify",)},
            settings=("review_link_base",),
            memory=256,
            timeout_s=60,
            description="one officer message per tenant per window",
        ),
        FunctionSpec(
            name="reconcile",
            handler="handler.handler",
            code_dir="reconcile",
            uses={
                INDEX: ("count", "record_ids", "add", "delete"),
                STORE: ("count_templates", "iter_templates"),
            },
            settings=SERVICE_SETTINGS,
            memory=1024,
            timeout_s=900,
            description="scheduled: the index holds exactly the store's templates",
        ),
        FunctionSpec(
            name="audit_archive",
            handler="handler.handler",
            code_dir="audit_archive",
            # fed by the audit table's stream: it reads no table itself, it only writes once
            uses={ARCHIVE: ("put",)},
            memory=256,
            timeout_s=60,
            description="every audit entry, write-once, to the Object Lock archive",
        ),
        FunctionSpec(
            name="api",
            handler="handler.handler",
            code_dir="api",
            # The review API serves every use case: cases, 1:1 verify, presigned uploads, erasure.
            uses={
                INDEX: ALL,
                STORE: ALL,
                BLOBS: ALL,
                # 1:1 verify's photos arrive by presigned POST and are deleted after use
                UPLOADS: ("presigned_upload", "presigned_post", "get", "keys", "delete_prefix"),
                NOTIFIER: ALL,
            },
            engine=True,
            # no review_link_base: the API's own URL would make the function depend on itself
            settings=(*SERVICE_SETTINGS, "backup_retention"),  # erasure's receipt names backups
            memory=2048,
            timeout_s=29,
            description="review API and console",
        ),
    )
}

# Functions the CDK app deploys only when a context flag asks for them (never in the default
# stack): `face-dedup:mosip-abis=true` adds the MOSIP ABIS consumer on Amazon MQ.
ABIS = "abis"
MIGRATE = "migrate"
MIGRATE_SWITCH = "migrate_switch"
MIGRATE_FINISH = "migrate_finish"
MIGRATE_SHADOW = "migrate_shadow"
MIGRATE_REPORT = "migrate_report"
MIGRATE_SHADOW_FILL = "migrate_shadow_fill"
BULK_ANALYSE = "bulk_analyse"
BULK_PREPARE = "bulk_prepare"
BULK_JOIN = "bulk_join"
BULK_DECIDE = "bulk_decide"
OPTIONAL_FUNCTIONS: dict[str, FunctionSpec] = {
    ABIS: FunctionSpec(
        name=ABIS,
        handler="handler.handler",
        code_dir="abis",
        # MOSIP's six operations on the core (face_dedup.mosip.handlers): insert enrolls without
        # searching, identify searches, delete is the product's erasure; every request is audited.
        uses={
            INDEX: ("count", "search", "add", "delete"),
            STORE: (
                "get_import_item",
                "find_application_records",
                "count_templates",
                "describe_records",
                "audit_events",
                "append_audit",
                "commit",
                "get_record",
                "erase_record",
            ),
            # erasure reads the photo and crop first: identical copies elsewhere are kept
            BLOBS: ("put", "get", "delete_prefix"),
        },
        engine=True,
        settings=SERVICE_SETTINGS,
        memory=3008,
        timeout_s=120,
        description="MOSIP ABIS: Amazon MQ request queue -> the six operations -> response queue",
    ),
    # `face-dedup:migration=true` adds the model-pack migration job (README, "Migrating between
    # packs in the cloud"): a Distributed Map whose item processor re-embeds records from their
    # stored crops into the target pack, and the cut-over step. Neither touches the index, so
    # neither runs in the VPC.
    MIGRATE: FunctionSpec(
        name=MIGRATE,
        handler="handler.handler",
        code_dir="migrate",
        uses={
            # a record of several photos: its templates read, the target pack's written beside
            STORE: (
                "missing_pack_templates",
                "put_pack_template",
                "record_templates",
                "put_pack_record_templates",
            ),
            BLOBS: ("get",),  # the record's aligned crop, else its photo
        },
        engine=True,  # the models layer: the target pack's files
        settings=SERVICE_SETTINGS,
        memory=3008,
        timeout_s=600,
        description="migration job: re-embed a batch of records into another model pack (idempotent)",
    ),
    MIGRATE_SWITCH: FunctionSpec(
        name=MIGRATE_SWITCH,
        handler="handler.switch",
        code_dir="migrate",
        uses={STORE: ("switch_pack",)},
        settings=SERVICE_SETTINGS,
        memory=512,
        timeout_s=900,
        description="migration job: cut over (or roll back) every record to the other pack's template",
    ),
    MIGRATE_FINISH: FunctionSpec(
        name=MIGRATE_FINISH,
        handler="handler.finish",
        code_dir="migrate",
        # erases the old pack's templates kept beside the records (no rollback after it)
        uses={STORE: ("count_templates", "drop_pack_templates", "append_audit")},
        settings=SERVICE_SETTINGS,
        memory=512,
        timeout_s=900,
        description="migration job: erase the old pack's templates once the migration is final",
    ),
    # Shadow mode (cloud_shadow.py): built for the SHADOW pack (engine, calibration, index);
    # reads the staged input and its crop, searches, audits agreement. Decides nothing.
    MIGRATE_SHADOW: FunctionSpec(
        name=MIGRATE_SHADOW,
        handler="handler.shadow",
        code_dir="migrate",
        uses={
            INDEX: ("count", "search_above"),
            STORE: ("get_staged", "describe_records", "append_audit"),
            BLOBS: ("get",),  # the staged input's aligned crop, else its photo
        },
        engine=True,
        settings=(*SERVICE_SETTINGS, "shadow_pack"),
        memory=1769,
        timeout_s=60,
        description="migration: the search again in the shadow pack; agreement audited (ids only)",
    ),
    MIGRATE_SHADOW_FILL: FunctionSpec(
        name=MIGRATE_SHADOW_FILL,
        handler="handler.shadow_fill",
        code_dir="migrate",
        # the shadow pack's own index := the templates the job kept in that pack
        uses={INDEX: ("record_ids", "add", "delete"), STORE: ("pack_templates",)},
        settings=(*SERVICE_SETTINGS, "shadow_pack"),
        memory=1024,
        timeout_s=900,
        description="migration: fill the shadow pack's index from the templates the job kept",
    ),
    MIGRATE_REPORT: FunctionSpec(
        name=MIGRATE_REPORT,
        handler="handler.report",
        code_dir="migrate",
        # progress (records, shadow templates) and the shadow's audited comparisons
        uses={STORE: ("count_templates", "pack_templates", "audit_events")},
        settings=SERVICE_SETTINGS,
        memory=1024,
        timeout_s=900,
        description="migration: progress and shadow disagreements (record ids only)",
    ),
    # `face-dedup:bulk-import=true` adds the bulk de-duplication job's item processor
    # (cloud_bulk.py): a batch of manifest rows -> their photos analysed -> one part of the job
    # in the faces bucket. Nothing searched, nothing registered: not in the VPC.
    BULK_ANALYSE: FunctionSpec(
        name=BULK_ANALYSE,
        handler="handler.handler",
        code_dir="bulk",
        uses={UPLOADS: ("get_limited",), BLOBS: ("put",)},
        engine=True,
        settings=SERVICE_SETTINGS,
        memory=3008,
        timeout_s=600,
        description="bulk job: analyse a batch of manifest rows, write their templates (encrypted)",
    ),
    # The bulk job's second half (cloud_bulk_decide.py). prepare: the manifest's row count and
    # the tenant's gallery snapshot (the store's templates) written beside the parts.
    BULK_PREPARE: FunctionSpec(
        name=BULK_PREPARE,
        handler="handler.prepare",
        code_dir="bulk",
        uses={UPLOADS: ("get_limited",), STORE: ("iter_templates",), BLOBS: ("keys", "put")},
        settings=SERVICE_SETTINGS,
        # one 64k-template shard (32 MB at 128-d) held at a time, plus the store's pages
        memory=1769,
        timeout_s=900,
        description="bulk job: count the manifest, snapshot the gallery's templates (encrypted)",
    ),
    # join: one chunk against the snapshot and every earlier part; reads and writes the faces
    # bucket only (no index, no store): not in the VPC.
    BULK_JOIN: FunctionSpec(
        name=BULK_JOIN,
        handler="handler.join",
        code_dir="bulk",
        uses={BLOBS: ("get", "keys", "put")},
        settings=SERVICE_SETTINGS,
        # 3008 MB for its ~1.7 vCPU (the int8 products use every core), not for memory: one
        # block of 64k earlier templates and the chunk stacked (128-d: ~35 MB; 512-d: ~140 MB),
        # their codes, a 4096 x 2048 int32 tile (32 MB), a window of 32 parts read ahead;
        # 900 s for the last chunk of 1M rows into 1M (~21 s of CPU, ~1 GB read: README)
        memory=3008,
        timeout_s=900,
        description="bulk job: join a chunk of templates against the gallery and earlier rows",
    ),
    # decide: the rows in manifest order through `register` (what ingest and import use), the
    # searches answered from the join's pairs in front of the index: in the VPC.
    BULK_DECIDE: FunctionSpec(
        name=BULK_DECIDE,
        handler="handler.decide",
        code_dir="bulk",
        uses={
            INDEX: ("count", "search", "search_above", "add"),
            STORE: (
                "get_import_item",
                "commit",
                "describe_records",
                "find_application_records",
                "append_audit",
                "are_distinct",  # the concurrency re-check (a live enrollment meanwhile)
                "open_case",
            ),
            # the parts and pairs read; the kept photo and crop written, and deleted again when
            # the row verifies an enrolled application (register's verify-first path)
            BLOBS: ("get", "put", "delete_prefix"),
            UPLOADS: ("get_limited",),  # the row's photo, kept as import keeps it
            NOTIFIER: ("notify",),
            DRIFT: ("add",),
        },
        settings=(*SERVICE_SETTINGS, "review_link_base"),
        # one vCPU: it waits on DynamoDB, S3 and OpenSearch row by row; it holds one chunk's
        # parts (4,096 rows with their crops, ~30 KB each: ~120 MB of JSON, a few hundred MB
        # parsed) and their pairs. 900 s: it stops 60 s before, at a row boundary
        memory=1769,
        timeout_s=900,
        description="bulk job: register a chunk's rows in manifest order (checkpointed)",
    ),
}


def function_spec(name: str) -> FunctionSpec:
    """A function's declaration, whether the default stack deploys it or a flag adds it."""
    return FUNCTIONS[name] if name in FUNCTIONS else OPTIONAL_FUNCTIONS[name]


# The deploy-time step that creates the index and maps the functions' roles in the domain's
# security plugin (a CloudFormation custom resource; it runs as the domain's master user).
INDEX_SETUP = "index_setup"
# Security-plugin roles: what each function may do inside the index (IAM cannot tell a search
# POST from a bulk POST; the plugin can).
INDEX_READ_METHODS = frozenset({"count", "search", "search_above", "record_ids"})


def index_role(spec: FunctionSpec) -> str:
    """`face_dedup_read` for functions that only read the index, else `face_dedup_write`."""
    methods = spec.methods(INDEX)
    return "face_dedup_read" if methods != ALL and set(methods) <= INDEX_READ_METHODS else "face_dedup_write"


def settings_for(spec: FunctionSpec) -> tuple[str, ...]:
    """Every Settings field the function reads: its ports' adapters' and its own."""
    names: list[str] = []
    for port in spec.uses:
        names += PORT_SETTINGS[port]
    names += spec.settings
    return tuple(dict.fromkeys(names))
