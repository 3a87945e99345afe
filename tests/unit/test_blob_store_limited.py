"""The blob port's size-limited read (BlobStore.get_limited), on every adapter: an object within
the limit comes back whole, one over it is refused with BlobTooLarge (reason TOO_LARGE, its
size where the store tells it) without being read whole, a missing one is NotFound. S3 on moto:
the GET is ranged, so at most limit + 1 bytes are ever asked for."""

from __future__ import annotations

import os
import threading
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
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(BlobTooLarge):
        store.get_limited("t/big", 100)
    assert reads == []
    assert store.get_limited("t/big", 5000) == b"q" * 5000 and sum(reads) == 5000  # the count counts


def test_local_reads_one_byte_past_the_limit_of_a_file_that_grew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file grew between its size and its read (the size said 10 bytes): at most limit + 1
    bytes are read, and it is refused."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/growing", b"q" * 1_000_000, "application/octet-stream")
    real_fstat, real_read = os.fstat, os.read
    reads: list[int] = []

    def small_fstat(fd: int) -> os.stat_result:
        found = real_fstat(fd)
        return os.stat_result((found.st_mode, *found[1:6], 10, *found[7:]))

    def counting_read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "fstat", small_fstat)
    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(BlobTooLarge) as raised:
        store.get_limited("t/growing", 100)
    assert raised.value.measured is None and sum(reads) == 101


def test_local_reads_only_a_regular_file(tmp_path: Path) -> None:
    """A symbolic link (to a file outside the store, or to /dev/zero), a FIFO and a folder under
    a key are NotFound: nothing outside the store is read, and nothing waits for a writer."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/real", b"photo", "image/jpeg")
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"not the store's")
    (tmp_path / "blobs" / "t" / "link").symlink_to(secret)
    (tmp_path / "blobs" / "t" / "zero").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "blobs" / "t" / "fifo")
    (tmp_path / "blobs" / "t" / "folder").mkdir()
    outcomes: dict[str, str] = {}

    def read_all() -> None:
        for key in ("link", "zero", "fifo", "folder"):
            try:
                outcomes[key] = repr(store.get_limited(f"t/{key}", 1000))
            except NotFound:
                outcomes[key] = "NotFound"

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(60)  # a FIFO opened for reading would wait for a writer forever
    assert outcomes == {key: "NotFound" for key in ("link", "zero", "fifo", "folder")}
    assert store.get_limited("t/real", 1000) == b"photo"
