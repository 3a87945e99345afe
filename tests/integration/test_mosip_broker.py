"""The ABIS behind a real broker: Debian's ActiveMQ on loopback, spoken to over STOMP as MOSIP's
registration processor would (requests on mosip-to-abis, replies on abis-to-mosip, matched by
requestId). Skips, saying why, where the activemq package is not installed."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp

from face_dedup.errors import TransientError
from face_dedup.mosip.broker import MAX_DEATHS, AbisConsumer
from face_dedup.mosip.config import AbisConfig
from face_dedup.mosip.datashare import DatashareClient, DatashareConfig
from face_dedup.mosip.handlers import AbisHandler
from face_dedup.mosip.iso_face import face_reader
from face_dedup.service import DedupService
from tests.support import activemq
from tests.support.mosip import Datashare, assert_reply_shape, cbeff_from_photo, datashare_server, request

pytestmark = pytest.mark.shared_data

A1, A2 = "lfw/Adrien_Brody/Adrien_Brody_0002.jpg", "lfw/Adrien_Brody/Adrien_Brody_0003.jpg"
B1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[activemq.ActiveMQ]:
    why = activemq.available()
    if why:
        pytest.skip(why)
    running = activemq.ActiveMQ(tmp_path_factory.mktemp("activemq"))
    running.start()
    yield running
    running.stop()


class Mosip:
    """MOSIP's side: sends requests (text or bytes) and collects replies by requestId."""

    def __init__(self, broker: activemq.ActiveMQ, queues: AbisConfig) -> None:
        self.queues = queues
        self.replies: queue.Queue[tuple[dict[str, Any], dict[str, str]]] = queue.Queue()
        self.conn = stomp.Connection12([("127.0.0.1", broker.port)], auto_content_length=False)
        outer = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: Any) -> None:
                outer.replies.put((json.loads(frame.body), dict(frame.headers)))

        self.conn.set_listener("mosip", Listener())
        self.conn.connect(wait=True)
        self.conn.subscribe("/queue/" + queues.response_queue, id="replies", ack="auto")

    def send(
        self, body: dict[str, Any], *, as_bytes: bool = False, extra: dict[str, str] | None = None
    ) -> str:
        """`extra`: more STOMP headers (names such as correlation-id are not Python names)."""
        payload = json.dumps(body).encode()
        headers = {
            "persistent": "true",
            **(extra or {}),
            **({"content-length": str(len(payload))} if as_bytes else {}),
        }
        self.conn.send("/queue/" + self.queues.request_queue, payload, headers=headers)
        return str(body["requestId"])

    def collect(self, request_ids: list[str]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        got: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        deadline = time.monotonic() + WAIT_S
        while set(request_ids) - set(got) and time.monotonic() < deadline:
            try:
                reply, headers = self.replies.get(timeout=1)
            except queue.Empty:
                continue
            assert_reply_shape(reply)
            got.setdefault(reply["requestId"], (reply, headers))
        missing = set(request_ids) - set(got)
        assert not missing, f"{len(missing)} request(s) got no reply"
        return got

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()


@pytest.fixture
def setup(
    broker: activemq.ActiveMQ, service: DedupService, request: pytest.FixtureRequest
) -> Iterator[tuple[Mosip, AbisConsumer, Datashare]]:
    suffix = request.node.name[-40:].replace("[", "-").replace("]", "")
    config = AbisConfig(
        broker_url=broker.url,
        request_queue=f"mosip-to-abis.{suffix}",
        response_queue=f"abis-to-mosip.{suffix}",
        heartbeat_ms=2000,
    )
    with datashare_server() as share:
        client = DatashareClient(DatashareConfig(allow_http=True))
        consumer = AbisConsumer(config, AbisHandler(service, client.fetch, read_face=face_reader()))
        mosip = Mosip(broker, config)
        yield mosip, consumer, share
        mosip.close()
        consumer.close()
        client.close()


def run(consumer: AbisConsumer) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.serve, args=(stop,), kwargs={"retry_s": 0.5}, daemon=True)
    thread.start()
    return stop, thread


def test_every_operation_over_the_broker_identify_after_queued_inserts(
    setup: tuple[Mosip, AbisConsumer, Datashare], faces_root: Path
) -> None:
    mosip, consumer, share = setup
    # Everything is queued before the ABIS starts: the identify must see the inserts before it.
    sent = [
        mosip.send(request("ping"), extra={"correlation-id": "corr-7"}),
        mosip.send(
            request("insert", referenceId="a1", referenceURL=share.share(cbeff_from_photo(faces_root / A1)))
        ),
        mosip.send(
            request("insert", referenceId="b1", referenceURL=share.share(cbeff_from_photo(faces_root / B1))),
            as_bytes=True,
        ),
        mosip.send(
            request("insert", referenceId="a2", referenceURL=share.share(cbeff_from_photo(faces_root / A2)))
        ),
        mosip.send(request("identify", referenceId="a2", referenceURL="")),
        mosip.send(request("pendingJobs")),
        mosip.send(request("referenceCount")),
        mosip.send(request("insert", referenceId="a1", referenceURL=share.url("gone"))),
        mosip.send(request("delete", referenceId="b1"), as_bytes=True),
        mosip.send(request("delete", referenceId="b1")),
        mosip.send(request("referenceCount")),
    ]
    stop, thread = run(consumer)
    try:
        replies = mosip.collect(sent)
    finally:
        stop.set()
        thread.join(timeout=30)
    ping, ins_a1, ins_b1, ins_a2, ident, pending, count, dup, delete, delete_again, count_after = (
        replies[i][0] for i in sent
    )
    assert (
        ping["returnValue"] == ins_a1["returnValue"] == ins_b1["returnValue"] == ins_a2["returnValue"] == "1"
    )
    assert ident["candidateList"]["count"] == "1"
    assert ident["candidateList"]["candidates"][0]["referenceId"] == "a1"
    assert 1 <= int(pending["jobscount"]) <= 5  # requests taken from the broker, not yet answered
    assert count["count"] == "3"
    assert dup["failureReason"] == "10"  # the referenceId check comes before the fetch
    assert delete["returnValue"] == "1" and delete_again["failureReason"] == "12"
    assert count_after["count"] == "2"
    # bytes requests get bytes replies (content-length), text requests text replies
    assert "content-length" in replies[sent[2]][1] and "content-length" not in replies[sent[1]][1]
    assert replies[sent[0]][1].get("correlation-id") == "corr-7"


def test_broker_restart_mid_stream_loses_no_request(
    setup: tuple[Mosip, AbisConsumer, Datashare], faces_root: Path, broker: activemq.ActiveMQ
) -> None:
    mosip, consumer, share = setup
    photos = [A1, B1, A2, "lfw/Abdullah_Gul/Abdullah_Gul_0001.jpg", "lfw/Adrien_Brody/Adrien_Brody_0005.jpg"]
    sent = [
        mosip.send(
            request("insert", referenceId=f"r{i}", referenceURL=share.share(cbeff_from_photo(faces_root / p)))
        )
        for i, p in enumerate(photos)
    ]
    sent += [mosip.send(request("referenceCount"))]
    mosip.close()
    stop, thread = run(consumer)
    try:
        deadline = time.monotonic() + WAIT_S
        while consumer.handled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.handled >= 1
        broker.restart()  # SIGKILL: unacknowledged requests must come back from the store
        mosip = Mosip(broker, consumer.config)
        replies = mosip.collect(sent)
    finally:
        stop.set()
        thread.join(timeout=30)
        mosip.close()
    inserts = [replies[i][0] for i in sent[:-1]]
    assert all(r["returnValue"] == "1" for r in inserts), inserts
    assert replies[sent[-1]][0]["count"] == str(len(photos))


def test_a_request_whose_reply_was_not_confirmed_is_served_again(
    setup: tuple[Mosip, AbisConsumer, Datashare],
    faces_root: Path,
    broker: activemq.ActiveMQ,
    service: DedupService,
) -> None:
    """The broker dies while a request is being processed: its reply cannot be sent, so it is
    not acknowledged, and the broker delivers it again after the restart."""
    mosip, consumer, share = setup
    client = DatashareClient(DatashareConfig(allow_http=True))
    trigger = share.share(cbeff_from_photo(faces_root / B1))
    back = threading.Event()

    def fetch(url: str) -> bytes:
        body = client.fetch(url)
        if url == trigger and not back.is_set():
            broker.restart()  # mid-request: the work is done, the reply not yet sent
            back.set()
        return body

    dying = AbisConsumer(consumer.config, AbisHandler(service, fetch, read_face=face_reader()))
    sent = [
        mosip.send(
            request("insert", referenceId="a1", referenceURL=share.share(cbeff_from_photo(faces_root / A1)))
        ),
        mosip.send(request("insert", referenceId="b1", referenceURL=trigger)),
        mosip.send(request("referenceCount")),
    ]
    mosip.close()
    stop, thread = run(dying)
    try:
        assert back.wait(WAIT_S)
        mosip = Mosip(broker, consumer.config)
        replies = mosip.collect(sent)
    finally:
        stop.set()
        thread.join(timeout=30)
        mosip.close()
        client.close()
    assert [replies[i][0]["returnValue"] for i in sent] == ["1", "1", "1"]
    assert replies[sent[2]][0]["count"] == "2"
    served = [e for e in service.store.audit_events() if e.details.get("request_id") == sent[1]]
    assert len(served) == 2  # processed, lost with the broker, delivered and processed again


class FakeFlakyHandler(AbisHandler):
    """The real handler, whose first request meets a dependency that is briefly down."""

    calls = 0

    def __init__(self, service: DedupService, fetch: Any) -> None:
        super().__init__(service, fetch, read_face=face_reader())
        self.redelivered: list[bool] = []

    def handle(self, body: bytes | str, *, redelivered: bool = True) -> dict[str, Any]:
        self.calls += 1
        self.redelivered.append(redelivered)
        if self.calls == 1:
            raise TransientError("the index is briefly unavailable")
        return super().handle(body, redelivered=redelivered)


def test_a_transient_failure_is_retried_not_dead_lettered(
    setup: tuple[Mosip, AbisConsumer, Datashare], service: DedupService
) -> None:
    mosip, consumer, _ = setup
    handler = FakeFlakyHandler(service, lambda url: b"")
    flaky = AbisConsumer(consumer.config, handler)
    sent = [mosip.send(request("referenceCount"))]
    stop, thread = run(flaky)
    try:
        replies = mosip.collect(sent)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert replies[sent[0]][0]["returnValue"] == "1"
    assert handler.calls == 2  # refused once, delivered again, answered
    assert handler.redelivered == [False, True]  # ActiveMQ's header, passed on by the consumer


class Died(BaseException):
    """The process dying mid-request (a decoder crash, the OOM killer): no handler runs."""


class FakeDyingHandler(AbisHandler):
    """The real handler, in a process that dies on every delivery of the reference `poison`."""

    deaths = 0

    def handle(self, body: bytes | str, *, redelivered: bool = True) -> dict[str, Any]:
        if b'"poison"' in (body if isinstance(body, bytes) else body.encode()):
            self.deaths += 1
            raise Died
        return super().handle(body, redelivered=redelivered)


def test_a_request_that_kills_the_abis_is_refused_and_does_not_block_the_queue(
    setup: tuple[Mosip, AbisConsumer, Datashare], service: DedupService, tmp_path: Path
) -> None:
    """Without the note on disk the poison request came back after every restart, forever, and
    nothing queued behind it was ever answered."""
    mosip, consumer, _ = setup
    handler = FakeDyingHandler(service, lambda url: b"", read_face=face_reader())
    note = tmp_path / "abis-inflight.json"
    sent = [
        mosip.send(request("insert", referenceId="poison", referenceURL="https://datashare.example/x")),
        mosip.send(request("referenceCount")),
    ]
    for _ in range(MAX_DEATHS):
        dying = AbisConsumer(consumer.config, handler, inflight=note)
        with pytest.raises(Died):
            dying.serve(threading.Event(), retry_s=0.5)
        dying.close()  # the process is gone, its connection with it: the request goes back
    survivor = AbisConsumer(consumer.config, handler, inflight=note)
    stop, thread = run(survivor)
    try:
        replies = mosip.collect(sent)
    finally:
        stop.set()
        thread.join(timeout=30)
        survivor.close()
    poison, count = (replies[i][0] for i in sent)
    assert handler.deaths == MAX_DEATHS
    assert poison["returnValue"] == "2" and poison["failureReason"] == "1"
    assert count["returnValue"] == "1"  # the request behind it is served
    audited = [e for e in service.store.audit_events() if e.details.get("request_id") == sent[0]]
    assert [e.details["failure_reason"] for e in audited] == ["1"]
    assert f"stopped {MAX_DEATHS} times" in audited[0].details["detail"]
    assert not note.exists()  # answered: nothing in flight


def test_a_second_abis_on_the_queue_stands_by(
    setup: tuple[Mosip, AbisConsumer, Datashare], service: DedupService
) -> None:
    """Two ABIS processes on one queue would split the requests between them, and an Identify
    could be served before the Inserts queued ahead of it: the subscription is exclusive."""
    mosip, consumer, _ = setup
    second = AbisConsumer(consumer.config, AbisHandler(service, lambda url: b"", read_face=face_reader()))
    runs = [run(consumer), run(second)]
    try:
        deadline = time.monotonic() + WAIT_S
        while not all(c._conn is not None for c in (consumer, second)) and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = [mosip.send(request("referenceCount")) for _ in range(8)]
        replies = mosip.collect(sent)
    finally:
        for stop, thread in runs:
            stop.set()
            thread.join(timeout=30)
        second.close()
    assert all(replies[i][0]["returnValue"] == "1" for i in sent)
    assert sorted([consumer.handled, second.handled]) == [0, 8]
