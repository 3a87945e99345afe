"""The blob port's size-limited read (BlobStore.get_limited), on every adapter: an object within
the limit comes back whole, one over it is refused with BlobTooLarge (reason TOO_LARGE, its
size where the store tells it) without being read whole, a missing one is NotFound. S3 on moto:
the GET is ranged, so at most limit + 1 bytes are ever asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.s3_blobs import S3BlobStore
from face_dedup.errors import BlobTooLarge, NotFound, Reason
from face_dedup.ports import BlobStore

REGION = "eu-west-1"


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="blobs-test", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield S3BlobStore(client, "blobs-test")


def test_within_the_limit_the_object_comes_back_whole(store: BlobStore) -> None:
    store.put("t/a", b"x" * 100, "application/octet-stream")
    assert store.get_limited("t/a", 100) == b"x" * 100
    assert store.get_limited("t/a", 10_000) == b"x" * 100
    store.put("t/empty", b"", "application/octet-stream")
    assert store.get_limited("t/empty", 0) == b""
    assert store.get_limited("t/empty", 5) == b""


def test_over_the_limit_it_is_refused_with_its_size(store: BlobStore) -> None:
    store.put("t/big", b"y" * 1001, "application/octet-stream")
    with pytest.raises(BlobTooLarge) as raised:
        store.get_limited("t/big", 1000)
    assert raised.value.reason is Reason.TOO_LARGE
    assert raised.value.measured == 1001 and raised.value.limit == 1000
    assert store.get("t/big") == b"y" * 1001  # nothing changed


def test_a_missing_object_is_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound):
        store.get_limited("t/none", 10)


def test_s3_asks_for_at_most_one_byte_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="blobs-test", CreateBucketConfiguration={"LocationConstraint": REGION})
        client.put_object(Bucket="blobs-test", Key="faces/t/big", Body=b"z" * 50_000)
        asked: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: asked.append(params)
        )
        got: list[int] = []
        client.meta.events.register(
            "after-call.s3.GetObject", lambda parsed, **_: got.append(int(parsed["ContentLength"]))
        )
        with pytest.raises(BlobTooLarge) as raised:
            S3BlobStore(client, "blobs-test").get_limited("t/big", 4096)
        assert raised.value.measured == 50_000
        assert asked[0]["Range"] == "bytes=0-4096"
        assert got == [4097]  # the range S3 sent: never the whole object


def test_local_refuses_from_the_size_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/big", b"q" * 5000, "application/octet-stream")
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        original = handle.read

        def read(size: int = -1) -> bytes:
            data: bytes = original(size)
            reads.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    with pytest.raises(BlobTooLarge):
        store.get_limited("t/big", 100)
    assert reads == []
