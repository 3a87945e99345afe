"""S3 adapter of the blob store. Objects are written with SSE-KMS when a key is given (the
bucket policy also enforces encryption and TLS); keys carry no personal data."""

from __future__ import annotations

from typing import Any

from face_dedup.errors import BlobTooLarge, NotFound
from face_dedup.ports import BlobStore


class S3BlobStore(BlobStore):
    def __init__(
        self, client: Any, bucket: str, *, prefix: str = "faces/", kms_key_id: str | None = None
    ) -> None:
        """`client` is a boto3 S3 client (built once per process by the bootstrap)."""
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._kms_key_id = kms_key_id

    def _key(self, key: str) -> str:
        if not key or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self._prefix + key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        extra: dict[str, str] = {}
        if self._kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}
        self._client.put_object(
            Bucket=self._bucket, Key=self._key(key), Body=data, ContentType=content_type, **extra
        )

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
        except self._client.exceptions.NoSuchKey:
            raise NotFound(f"no blob {key}") from None
        return bytes(response["Body"].read())

    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """One ranged GET of at most `max_bytes` + 1 bytes: the object's whole size comes back
        in Content-Range, so a larger one is refused without its body being read past that."""
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key(key), Range=f"bytes=0-{max(0, max_bytes)}"
            )
        except self._client.exceptions.NoSuchKey:
            raise NotFound(f"no blob {key}") from None
        except self._client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # an empty object has no byte 0 to range over
            raise
        body = response["Body"]
        size = _total_size(response)
        if size is not None and size > max_bytes:
            body.close()
            raise BlobTooLarge(key, size, max_bytes)
        data = bytes(body.read(max_bytes + 1))
        if len(data) > max_bytes:  # a store that ignored the range: still never more than this
            body.close()
            raise BlobTooLarge(key, size, max_bytes)
        return data

    def delete_prefix(self, prefix: str) -> int:
        """Delete every version (and delete marker) under the prefix: on a versioned bucket a
        plain delete only hides the photo, and erasure must really erase."""
        removed: set[str] = set()
        paginator = self._client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._key(prefix)):
            versions = page.get("Versions", []) + page.get("DeleteMarkers", [])
            for start in range(0, len(versions), 1000):  # DeleteObjects takes at most 1000 keys
                batch = versions[start : start + 1000]
                self._client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in batch]},
                )
            removed.update(v["Key"] for v in page.get("Versions", []))
        return len(removed)

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        return str(
            self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._key(key)},
                ExpiresIn=expires_seconds,
            )
        )

    def presigned_upload(self, key: str, content_type: str, expires_seconds: int) -> str | None:
        params: dict[str, str] = {"Bucket": self._bucket, "Key": self._key(key), "ContentType": content_type}
        if self._kms_key_id:
            params |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}
        return str(
            self._client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_seconds)
        )

    def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_seconds: int
    ) -> dict[str, Any] | None:
        # S3 itself enforces the policy: a larger body, another type or another key is refused.
        fields: dict[str, str] = {"Content-Type": content_type}
        conditions: list[Any] = [{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]]
        if self._kms_key_id:
            extra = {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": self._kms_key_id,
            }
            fields |= extra
            conditions += [{k: v} for k, v in extra.items()]
        post = self._client.generate_presigned_post(
            Bucket=self._bucket,
            Key=self._key(key),
            Fields=fields,
            Conditions=conditions,
            ExpiresIn=expires_seconds,
        )
        return {"url": str(post["url"]), "fields": dict(post["fields"])}

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
            found += [obj["Key"][len(self._prefix) :] for obj in page.get("Contents", [])]
        return sorted(found)


def _total_size(response: dict[str, Any]) -> int | None:
    """The object's size from a ranged GET's Content-Range ("bytes 0-99/12345"), else None."""
    found = str(response.get("ContentRange") or "")
    total = found.rpartition("/")[2]
    return int(total) if total.isdigit() else None
