from __future__ import annotations

from typing import TypedDict

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from face_dedup.bulk_keys import PARTS_PREFIX
from face_dedup.deployment import FACES_PREFIX

UPLOADS_KEPT_DAYS = 7  # an upload stays this long after it was processed (erasure does not reach it)
# A bulk job's parts left by an execution that failed: Step Functions redrives for 14 days.
BULK_PARTS_KEPT_DAYS = 15


class _PrivateBucketProps(TypedDict):
    """The properties every data bucket shares (typed, so that `**common` is checked by mypy)."""

    encryption: s3.BucketEncryption
    encryption_key: kms.IKey
    bucket_key_enabled: bool
    block_public_access: s3.BlockPublicAccess
    enforce_ssl: bool
    versioned: bool
    server_access_logs_bucket: s3.IBucket
    removal_policy: RemovalPolicy


class Storage(Construct):
    """Buckets: `uploads` (selfies and registry batches arrive; transient), `faces` (the photos
    and aligned crops officers review), and the access-log bucket. All private, TLS only,
    KMS-encrypted, versioned; old versions expire within a day so that erasure really erases."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, retention_days: int) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # server access logging cannot write to KMS buckets
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            versioned=True,  # an overwritten or deleted log stays readable for a day
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(1)
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        common: _PrivateBucketProps = {
            "encryption": s3.BucketEncryption.KMS,
            "encryption_key": key,
            "bucket_key_enabled": True,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "versioned": True,
            "server_access_logs_bucket": self.access_logs,
            "removal_policy": RemovalPolicy.RETAIN,
        }
        self.uploads = s3.Bucket(
            self,
            "Uploads",
            server_access_logs_prefix="uploads/",
            lifecycle_rules=[
                # Uploads are processed within minutes; keep them a week for investigations only.
                s3.LifecycleRule(
                    expiration=Duration.days(UPLOADS_KEPT_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1)),
                # 1:1 verify's photos are deleted once compared; a pair never compared goes in a day
                s3.LifecycleRule(prefix="verify/", expiration=Duration.days(1)),
            ],
            **common,
        )
        self.faces = s3.Bucket(
            self,
            "Faces",
            server_access_logs_prefix="faces/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(retention_days), noncurrent_version_expiration=Duration.days(1)
                ),
                # a bulk job's own objects (copies of templates and crops): deleted by its last
                # step; what a job that never finished left goes after its redrive window
                s3.LifecycleRule(
                    prefix=f"{FACES_PREFIX}{PARTS_PREFIX}/", expiration=Duration.days(BULK_PARTS_KEPT_DAYS)
                ),
            ],
            **common,
        )
        # The audit trail's write-once copy: Object Lock in compliance mode, for as long as the
        # registry keeps its records. No principal can shorten it or delete an entry before then.
        self.audit_archive = s3.Bucket(
            self,
            "AuditArchive",
            server_access_logs_prefix="audit-archive/",
            object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(Duration.days(retention_days)),
            **common,
        )
