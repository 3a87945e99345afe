"""The cloud ABIS function (functions/abis) on Amazon MQ events: the real handler, built from its
declaration in face_dedup.wiring (an undeclared port call fails), on moto's DynamoDB, S3 and
Secrets Manager, the index on osmem (k-NN answered by the named FakeKnnOpenSearch, as in the
serverless e2e test), and its replies sent over STOMP to a real broker (Debian's ActiveMQ on
loopback; Amazon MQ speaks the same STOMP, over TLS). Requests arrive as the event source
mapping delivers them: the shape of events/abis/insert-via-amazon-mq.json, data base64."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import stomp
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import TableNames, create_tables
from face_dedup.errors import TransientError
from face_dedup.mosip.amazon_mq import MqEventError, parse_event
from face_dedup.settings import Settings
from tests.support import activemq
from tests.support.fake_knn_opensearch import FakeKnnOpenSearch
from tests.support.mosip import assert_reply_shape, cbeff_from_photo, datashare_server, request

pytestmark = pytest.mark.shared_data

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events" / "abis" / "insert-via-amazon-mq.json"
A1, A2 = "lfw/Adrien_Brody/Adrien_Brody_0002.jpg", "lfw/Adrien_Brody/Adrien_Brody_0003.jpg"
B1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"


class FakeContext:
    """What Powertools reads from a Lambda context."""

    function_name = "face-dedup-abis"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:face-dedup-abis"
    memory_limit_in_mb = 3008
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/face-dedup-abis"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 120_000


def event_for(
    body: dict[str, Any], *, bytes_message: bool = False, redelivered: bool = False
) -> dict[str, Any]:
    """The sample event with this request as its one message."""
    event = copy.deepcopy(json.loads(SAMPLE.read_text(encoding="utf-8")))
    message = event["messages"][0]
    message["data"] = base64.b64encode(json.dumps(body).encode()).decode()
    message["correlationId"] = body["requestId"]
    message["redelivered"] = redelivered
    if bytes_message:
        message["messageType"] = "jms/bytes-message"
    return dict(event)


class Mosip:
    """MOSIP's side of the response queue."""

    def __init__(self, broker: activemq.ActiveMQ) -> None:
        self.replies: queue.Queue[tuple[dict[str, Any], dict[str, str]]] = queue.Queue()
        self.conn = stomp.Connection12([("127.0.0.1", broker.port)], auto_content_length=False)
        outer = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: Any) -> None:
                outer.replies.put((json.loads(frame.body), dict(frame.headers)))

        self.conn.set_listener("mosip", Listener())
        self.conn.connect(wait=True)
        self.conn.subscribe("/queue/abis-to-mosip", id="replies", ack="auto")

    def reply(self) -> tuple[dict[str, Any], dict[str, str]]:
        return self.replies.get(timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[activemq.ActiveMQ]:
    why = activemq.available()
    if why:
        pytest.skip(why)
    running = activemq.ActiveMQ(tmp_path_factory.mktemp("activemq"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def cloud(
    broker: activemq.ActiveMQ,
    base_settings: Settings,
    osmem_clone: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_INDEX_BACKEND": "opensearch",
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_DYNAMODB_TABLE_PREFIX": "fd-",
        "FACE_DEDUP_OPENSEARCH_URL": osmem_clone.url,
        "FACE_DEDUP_OPENSEARCH_AUTH": "none",
        "FACE_DEDUP_ABIS_BROKER_URL": broker.url,
        "FACE_DEDUP_ABIS_DATASHARE_ALLOW_HTTP": "true",  # the test datashare is plain HTTP on loopback
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(
        "face_dedup.bootstrap._opensearch_client",
        lambda settings: FakeKnnOpenSearch(hosts=[settings.opensearch_url]),
    )
    from face_dedup.bootstrap import _opensearch_index

    _opensearch_index(Settings.load()).ensure_index()  # the stack's deploy-time index step
    with mock_aws(), datashare_server() as share:
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="faces", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="faces", VersioningConfiguration={"Status": "Enabled"})
        create_tables(boto3.client("dynamodb", region_name=REGION), TableNames.with_prefix("fd-"))
        # Debian's test broker has no users: any credentials are accepted, but they are read
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="abis-broker", SecretString=json.dumps({"username": "face-dedup-abis", "password": "x" * 32})
        )
        monkeypatch.setenv("FACE_DEDUP_ABIS_BROKER_SECRET_ARN", secret["ARN"])
        module = importlib.import_module("functions.abis.handler")
        module.abis.cache_clear()
        mosip = Mosip(broker)
        try:
            yield {"handler": module.handler, "module": module, "share": share, "mosip": mosip}
        finally:
            mosip.conn.disconnect()
            if module.abis.cache_info().currsize:
                module.abis()[1].close()
            module.abis.cache_clear()


def call(cloud: dict[str, Any], body: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    assert cloud["handler"](event_for(body, **kw), FakeContext()) == {"answered": 1}
    reply, headers = cloud["mosip"].reply()
    assert reply["requestId"] == body["requestId"]
    assert_reply_shape(reply)
    return reply, headers


def test_the_sample_event_is_read_as_amazon_mq_delivers_it() -> None:
    (message,) = parse_event(json.loads(SAMPLE.read_text(encoding="utf-8")))
    body = json.loads(message.body)
    assert body["id"] == "mosip.abis.insert" and message.queue == "mosip-to-abis"
    assert not message.bytes_message and not message.redelivered
    assert message.correlation_id == body["requestId"]


@pytest.mark.parametrize(
    "event",
    [
        {"eventSource": "aws:sqs", "messages": [{"data": "e30="}]},
        {"eventSource": "aws:mq", "messages": []},
        {"eventSource": "aws:mq", "messages": [{"data": "not base64!"}]},
        {"eventSource": "aws:mq", "messages": ["a string"]},
    ],
)
def test_an_event_that_is_not_amazon_mqs_is_refused_by_name(event: dict[str, Any]) -> None:
    with pytest.raises(MqEventError):
        parse_event(event)


def test_insert_then_identify_through_the_function_replies_on_the_broker(
    cloud: dict[str, Any], faces_root: Path
) -> None:
    share = cloud["share"]
    sent = {}
    for ref, photo in (("a1", A1), ("b1", B1), ("a2", A2)):
        url = share.share(cbeff_from_photo(faces_root / photo))
        sent[ref] = request("insert", referenceId=ref, referenceURL=url)
        reply, headers = call(cloud, sent[ref])
        assert reply["returnValue"] == "1", reply
        assert headers["correlation-id"] == reply["requestId"]
    # the same insert delivered again (the function died after replying): answered as before
    assert call(cloud, sent["a1"], redelivered=True)[0]["returnValue"] == "1"
    # another insert of a reference already there: failure, as the spec says
    other = request("insert", referenceId="a1", referenceURL=share.share(cbeff_from_photo(faces_root / A1)))
    reply, _ = call(cloud, other)
    assert (reply["returnValue"], reply["failureReason"]) == ("2", "10"), reply
    # identify by reference: a2 finds a1 (the same man), not b1
    reply, _ = call(cloud, request("identify", referenceId="a2", flags={"maxResults": "5"}))
    assert reply["returnValue"] == "1", reply
    found = [c["referenceId"] for c in reply["candidateList"]["candidates"]]
    assert found == ["a1"], found
    # a bytes request gets a bytes reply (content-length), and the count sees three references
    reply, headers = call(cloud, request("referenceCount"), bytes_message=True)
    assert reply["count"] == "3" and "content-length" in headers
    # delete erases a1: a second identify no longer finds it
    assert call(cloud, request("delete", referenceId="a1"))[0]["returnValue"] == "1"
    reply, _ = call(cloud, request("identify", referenceId="a2"))
    assert reply["candidateList"]["count"] == "0"


def test_an_identify_that_overtook_its_insert_is_handed_back_once(
    cloud: dict[str, Any], faces_root: Path
) -> None:
    """Lambda redelivers a failed Insert after the requests behind it: the Identify waits for it."""
    identify = request("identify", referenceId="late")
    with pytest.raises(TransientError):
        cloud["handler"](event_for(identify), FakeContext())
    assert cloud["mosip"].replies.empty()  # unanswered: the broker delivers it again
    url = cloud["share"].share(cbeff_from_photo(faces_root / A1))
    assert call(cloud, request("insert", referenceId="late", referenceURL=url))[0]["returnValue"] == "1"
    reply, _ = call(cloud, identify, redelivered=True)
    assert reply["returnValue"] == "1", reply
    # a reference that never comes: the redelivery is answered, failure 12
    ghost = request("identify", referenceId="ghost")
    with pytest.raises(TransientError):
        cloud["handler"](event_for(ghost), FakeContext())
    reply, _ = call(cloud, ghost, redelivered=True)
    assert (reply["returnValue"], reply["failureReason"]) == ("2", "12"), reply


def test_a_reply_the_broker_does_not_take_fails_the_invocation(
    cloud: dict[str, Any], broker: activemq.ActiveMQ
) -> None:
    """The event source mapping then hands the message back to the broker: nothing is lost."""
    cloud["module"].abis()  # warm: connected
    broker.stop()
    try:
        with pytest.raises(TransientError):
            cloud["handler"](event_for(request("ping")), FakeContext())
    finally:
        broker.start()
    cloud["mosip"].conn.disconnect()
    cloud["mosip"] = Mosip(broker)
    assert call(cloud, request("ping"))[0]["returnValue"] == "1"  # reconnects on the next one
