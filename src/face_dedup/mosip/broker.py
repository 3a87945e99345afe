"""The broker side of the ABIS: STOMP to ActiveMQ (Debian's, or Amazon MQ).

One request at a time, in arrival order (so every Insert queued before an Identify is done
before it). Each request is acknowledged only after its reply is sent, and the reply and the
acknowledgement go in one STOMP transaction that the broker confirms: a crash or a broker
restart at any point means the request is delivered again, never lost. The handlers are
idempotent for exactly that case (an insert or delete seen before answers as it did).
Replies mirror the request's message type: a JMS bytes request (STOMP frame with
content-length) gets a bytes reply, a text request a text reply.

A poison request, one that kills the process (a decoder crash, the OOM killer), would come back
after every restart and block every request queued behind it: the request being processed is
noted on disk, and one the ABIS has already died on `MAX_DEATHS` times is answered with failure
1 (and audited) instead of being processed again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import stomp
from stomp.utils import Frame

from face_dedup.errors import ConfigError, TransientError
from face_dedup.mosip.handlers import AbisHandler

if TYPE_CHECKING:  # the composition root (mosip/app.py) loads it and hands it in
    from face_dedup.mosip.config import AbisConfig

log = logging.getLogger(__name__)
RECEIPT_TIMEOUT_S = 30.0
MAX_DEATHS = 2  # deliveries of one request that ended with the process gone, before it is refused


class InFlight:
    """The request being processed, noted on disk (its broker message-id, and how many earlier
    deliveries of it ended with the process gone). One file per ABIS; without a path, nothing
    is noted (and a poison request is not recognised)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def begin(self, message_id: str) -> int:
        """Note that `message_id` is being processed; how many deliveries of it died before."""
        if self.path is None or not message_id:
            return 0
        died = 0
        try:
            previous = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(previous, dict) and previous.get("message_id") == message_id:
                died = int(previous.get("died", 0)) + 1  # the last delivery never reached end()
        except (OSError, ValueError, TypeError):
            pass  # none noted, or a note we cannot read: count from zero
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"message_id": message_id, "died": died}), encoding="utf-8")
            tmp.replace(self.path)  # whole or not at all, even if we die right here
        except OSError as exc:  # no writable data dir (a cloud backend): serve, unguarded
            log.warning("cannot note the request in flight (%s): poison requests not recognised", exc)
        return died

    def end(self) -> None:
        if self.path is not None:
            with suppress(OSError):
                self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Delivery:
    generation: int
    frame: Frame


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self, consumer: AbisConsumer, generation: int) -> None:
        self._consumer, self._generation = consumer, generation

    def on_message(self, frame: Frame) -> None:
        self._consumer.inbox.put(_Delivery(self._generation, frame))

    def on_receipt(self, frame: Frame) -> None:
        self._consumer.receipt_arrived(frame.headers.get("receipt-id", ""))

    def on_error(self, frame: Frame) -> None:
        log.error("broker error: %s", frame.headers.get("message", "")[:200])

    def on_disconnected(self) -> None:
        self._consumer.lost(self._generation)


class AbisConsumer:
    def __init__(self, config: AbisConfig, handler: AbisHandler, *, inflight: Path | None = None) -> None:
        self.config = config
        self.handler = handler
        self.inflight = InFlight(inflight)
        self.inbox: queue.Queue[_Delivery] = queue.Queue()
        self.handled = 0
        self._generation = 0
        self._connected = threading.Event()
        self._receipts: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._conn: stomp.Connection12 | None = None
        handler.pending_jobs = self.pending  # pendingJobs: requests taken, not yet answered

    def pending(self) -> int:
        return self.inbox.qsize()

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()  # a lost connection's threads stop before a new one starts
        parts = urlsplit(self.config.broker_url)
        if not parts.hostname or not parts.port:
            raise ConfigError("the broker URL needs a host and a port")
        with self._lock:
            self._generation += 1
            generation = self._generation
        conn = stomp.Connection12(
            [(parts.hostname, parts.port)],
            heartbeats=(self.config.heartbeat_ms, self.config.heartbeat_ms),
            auto_content_length=False,
            auto_decode=False,
            reconnect_attempts_max=1,
        )
        if parts.scheme == "stomp+ssl":
            conn.set_ssl(for_hosts=[(parts.hostname, parts.port)])
        conn.set_listener("abis", _Listener(self, generation))
        conn.connect(self.config.broker_user, self.config.broker_password, wait=True)
        conn.subscribe(
            "/queue/" + self.config.request_queue,
            id="abis",
            ack="client-individual",
            # Exclusive: a second `face-dedup abis` on the queue stands by instead of taking every
            # other request (an Identify could then run before the Inserts queued ahead of it).
            headers={"activemq.prefetchSize": str(self.config.prefetch), "activemq.exclusive": "true"},
        )
        self._conn = conn
        self._connected.set()
        log.info("ABIS consuming %s on %s", self.config.request_queue, parts.hostname)

    def lost(self, generation: int) -> None:
        if generation == self._generation:
            self._connected.clear()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None:
            with suppress(stomp.exception.StompException, OSError):
                conn.disconnect()

    # -- serving ------------------------------------------------------------------------------

    def serve(self, stop: threading.Event, *, retry_s: float = 2.0) -> None:
        """Serve until `stop` is set; reconnect (with the same subscription) after a broker loss."""
        while not stop.is_set():
            if not self._connected.is_set():
                self._drop_stale()
                if self._conn is not None:  # lost, or let go after a transient failure: pause
                    self.close()
                    stop.wait(retry_s)
                try:
                    self.connect()
                except (stomp.exception.StompException, OSError) as exc:
                    log.warning("broker unavailable (%s); retrying", type(exc).__name__)
                    stop.wait(retry_s)
                    continue
            try:
                delivery = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if delivery.generation == self._generation and self._connected.is_set():
                self.process(delivery.frame)
        self.close()

    def _drop_stale(self) -> None:
        """Deliveries of a lost connection cannot be acknowledged: the broker sends them again."""
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                return

    def process(self, frame: Frame) -> None:
        conn = self._conn
        if conn is None:
            return
        body = frame.body if isinstance(frame.body, bytes) else str(frame.body).encode()
        died = self.inflight.begin(frame.headers.get("message-id", ""))
        try:
            if died >= MAX_DEATHS:
                log.error("a request stopped the ABIS %d times: answered as an internal error", died)
                reply = self.handler.refuse_poison(body, died)
            else:
                # ActiveMQ marks a delivery that may have been seen before (after a lost connection)
                reply = self.handler.handle(body, redelivered=frame.headers.get("redelivered") == "true")
        except TransientError as exc:
            self.inflight.end()
            # Not NACK: ActiveMQ dead-letters a STOMP NACK at once. Letting go of the connection
            # hands every unacknowledged request back to the broker, to be delivered again.
            log.warning("transient failure (%s): reconnecting; the request will be delivered again", exc)
            self._connected.clear()
            return
        except Exception:  # even the failure reply failed (e.g. the store is gone): keep serving
            self.inflight.end()
            log.exception("request not answered: sent to the broker's dead-letter queue")
            self._safe(lambda: conn.nack(frame.headers["ack"]))
            return
        self.inflight.end()  # an outcome, whatever it is: only a death leaves the note (no finally)
        payload = json.dumps(reply, separators=(",", ":")).encode()
        headers: dict[str, Any] = {"persistent": "true"}
        if "correlation-id" in frame.headers:
            headers["correlation-id"] = frame.headers["correlation-id"]
        if "content-length" in frame.headers:  # a bytes message: answer in kind
            headers["content-length"] = str(len(payload))
        tx = str(uuid.uuid4())

        def send_and_ack() -> None:
            conn.begin(transaction=tx)
            conn.send("/queue/" + self.config.response_queue, payload, headers=headers, transaction=tx)
            conn.ack(frame.headers["ack"], transaction=tx)
            self._commit(conn, tx)

        if self._safe(send_and_ack):
            self.handled += 1

    def _commit(self, conn: stomp.Connection12, tx: str) -> None:
        receipt = "commit-" + tx
        done = threading.Event()
        self._receipts[receipt] = done
        try:
            conn.commit(transaction=tx, headers={"receipt": receipt})
            if not done.wait(RECEIPT_TIMEOUT_S):
                raise TimeoutError("the broker did not confirm the reply")
        finally:
            self._receipts.pop(receipt, None)

    def receipt_arrived(self, receipt_id: str) -> None:
        event = self._receipts.get(receipt_id)
        if event is not None:
            event.set()

    def _safe(self, action: Any) -> bool:
        """A broker loss mid-reply: the request stays unacknowledged and comes back."""
        try:
            action()
        except (stomp.exception.StompException, OSError, TimeoutError) as exc:
            log.warning("reply not confirmed (%s): the request will be delivered again", type(exc).__name__)
            self._connected.clear()
            return False
        return True
