"""The ABIS as a Lambda function on Amazon MQ (ActiveMQ): the event source mapping delivers
requests from MOSIP's request queue; each goes through the same handlers as `face-dedup abis`
(face_dedup.mosip.handlers, on the same core) and its reply is sent to the response queue over
STOMP+SSL with the broker's credentials from Secrets Manager.

Delivery semantics, and why they are safe here:
- The event source mapping acknowledges a message only when the function returns. The reply is
  sent (and confirmed by the broker with a receipt) before that, so a failure at any point
  means the request comes back, never that it is lost; a reply may be sent twice, and the
  handlers are idempotent for exactly that (an insert or delete seen before answers as it did).
- A request the handlers cannot even answer with a failure reply (the store is gone), a
  transient failure, or a reply the broker does not confirm: the function fails, the message
  returns to the broker, and after the broker's redelivery limit ActiveMQ moves it to its
  dead-letter queue (DLQ.<request queue>), from where an operator can move it back. The reason is
  logged with the message id (no body: it names a person's reference).
- An Identify by a referenceId not (yet) inserted, on its first delivery, is handed back
  unanswered once: Lambda redelivers a failed request after the ones queued behind it, so its
  Insert may still be coming. Delivered again, it is answered whatever it finds.
- A poison request (one that kills the runtime) ends the same way: every death is a failed
  invocation, so the redelivery limit bounds it (the local consumer's on-disk guard is not
  needed, and Lambda has no disk that outlives the environment anyway).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import uuid
from abc import ABC, abstractmethod
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import stomp
from stomp.utils import Frame

from face_dedup.errors import ConfigError, FaceDedupError, TransientError
from face_dedup.mosip.handlers import AbisHandler

log = logging.getLogger(__name__)
RECEIPT_TIMEOUT_S = 20.0
MAX_MESSAGE_BYTES = 1 << 20  # MOSIP requests are small JSON documents (URLs, ids, flags)


class MqEventError(FaceDedupError):
    """The event is not an Amazon MQ (ActiveMQ) event this function can read."""


@dataclass(frozen=True)
class MqMessage:
    message_id: str
    body: bytes
    bytes_message: bool  # a JMS bytes message: the reply goes back as bytes too
    correlation_id: str
    redelivered: bool
    queue: str


def parse_event(event: Any) -> list[MqMessage]:
    """The messages of an Amazon MQ event (AWS Lambda developer guide, "Using Lambda with
    Amazon MQ": `eventSource` "aws:mq", each message's body base64 in `data`)."""
    if not isinstance(event, dict) or event.get("eventSource") != "aws:mq":
        raise MqEventError("not an Amazon MQ event (eventSource must be aws:mq)")
    raw = event.get("messages")
    if not isinstance(raw, list) or not raw:
        raise MqEventError("an Amazon MQ event without messages")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise MqEventError(f"message {i}: not an object")
        data = item.get("data", "")
        if not isinstance(data, str) or len(data) > MAX_MESSAGE_BYTES * 4 // 3 + 4:
            raise MqEventError(f"message {i}: data missing or over {MAX_MESSAGE_BYTES} bytes")
        try:
            body = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise MqEventError(f"message {i}: data is not base64") from None
        destination = item.get("destination")
        queue = destination.get("physicalName", "") if isinstance(destination, dict) else ""
        messages.append(
            MqMessage(
                message_id=str(item.get("messageID", ""))[:300],
                body=body,
                bytes_message=item.get("messageType") == "jms/bytes-message",
                correlation_id=str(item.get("correlationId") or "")[:300],
                # unknown counts as redelivered: only then is an unknown delete looked up
                redelivered=item.get("redelivered") is not False,
                queue=str(queue)[:300],
            )
        )
    return messages


class ReplySender(ABC):
    """Where replies go: MOSIP's response queue."""

    @abstractmethod
    def send(self, payload: bytes, *, correlation_id: str, bytes_message: bool) -> None:
        """Send one reply; return only once the broker has it (else raise TransientError)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass


@dataclass(frozen=True)
class BrokerCredentials:
    username: str
    password: str


def credentials_from_secret(secret_string: str) -> BrokerCredentials:
    """The broker user from its secret: the JSON the event source mapping reads too
    (`{"username": ..., "password": ...}`, Lambda's BASIC_AUTH format)."""
    try:
        value = json.loads(secret_string)
        username, password = value["username"], value["password"]
    except (ValueError, TypeError, KeyError):
        raise ConfigError("the broker secret must be JSON with username and password") from None
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise ConfigError("the broker secret must be JSON with username and password")
    return BrokerCredentials(username, password)


def broker_hosts(broker_url: str) -> tuple[list[tuple[str, int]], bool]:
    """`stomp+ssl://host:61614[,stomp+ssl://standby:61614]` (Amazon MQ gives one STOMP
    endpoint per broker instance: two for active/standby) -> hosts, and whether TLS is on."""
    hosts, schemes = [], set()
    for url in (u.strip() for u in broker_url.split(",") if u.strip()):
        parts = urlsplit(url)
        if parts.scheme not in ("stomp", "stomp+ssl") or not parts.hostname or not parts.port:
            raise ConfigError("the broker URL must be stomp+ssl://host:port (comma-separated for standby)")
        hosts.append((parts.hostname, parts.port))
        schemes.add(parts.scheme)
    if not hosts or len(schemes) != 1:
        raise ConfigError("the broker URL must name at least one host, all with the same scheme")
    return hosts, schemes == {"stomp+ssl"}


class _Receipts(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.arrived: dict[str, threading.Event] = {}
        self.error = ""

    def on_receipt(self, frame: Frame) -> None:
        event = self.arrived.get(frame.headers.get("receipt-id", ""))
        if event is not None:
            event.set()

    def on_error(self, frame: Frame) -> None:
        self.error = str(frame.headers.get("message", ""))[:200]


class StompReplySender(ReplySender):
    """Replies over STOMP (STOMP+SSL to Amazon MQ), one connection kept while the execution
    environment is warm, each send confirmed by a broker receipt (persistent messages)."""

    def __init__(self, broker_url: str, credentials: BrokerCredentials, queue: str) -> None:
        self._hosts, self._ssl = broker_hosts(broker_url)
        self._credentials = credentials
        self._queue = queue
        self._conn: stomp.Connection12 | None = None
        self._listener = _Receipts()

    def _connected(self) -> stomp.Connection12:
        if self._conn is not None and self._conn.is_connected():
            return self._conn
        self.close()
        conn = stomp.Connection12(
            self._hosts, auto_content_length=False, auto_decode=False, reconnect_attempts_max=1
        )
        if self._ssl:
            conn.set_ssl(for_hosts=self._hosts)
        conn.set_listener("receipts", self._listener)
        conn.connect(self._credentials.username, self._credentials.password, wait=True)
        self._conn = conn
        return conn

    def send(self, payload: bytes, *, correlation_id: str, bytes_message: bool) -> None:
        headers: dict[str, str] = {"persistent": "true"}
        if correlation_id:
            headers["correlation-id"] = correlation_id
        if bytes_message:  # a content-length makes ActiveMQ deliver a JMS BytesMessage
            headers["content-length"] = str(len(payload))
        receipt = "reply-" + str(uuid.uuid4())
        done = threading.Event()
        self._listener.arrived[receipt] = done
        try:
            conn = self._connected()
            conn.send("/queue/" + self._queue, payload, headers={**headers, "receipt": receipt})
            if not done.wait(RECEIPT_TIMEOUT_S):
                raise TimeoutError("the broker did not confirm the reply")
        except (stomp.exception.StompException, OSError, TimeoutError) as exc:
            self.close()
            raise TransientError(f"reply not sent ({type(exc).__name__} {self._listener.error})") from None
        finally:
            self._listener.arrived.pop(receipt, None)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(stomp.exception.StompException, OSError):
                conn.disconnect()


def handle_event(event: Any, handler: AbisHandler, sender: ReplySender) -> dict[str, int]:
    """Answer every message of the event, in order. Raises (the messages go back to the broker)
    on a transient failure or when a request could not be answered at all."""
    answered = 0
    for message in parse_event(event):
        if not message.redelivered and handler.awaits_insert(message.body):
            # Handed back once, unanswered: an Insert that failed and is being redelivered comes
            # back before it. Delivered again, it is answered whatever it finds (failure 12).
            log.info("identify %s of an unknown reference: handed back once", message.message_id)
            raise TransientError("identify before its reference's insert: delivered again")
        try:
            reply = handler.handle(message.body, redelivered=message.redelivered)
        except TransientError as exc:
            log.warning("transient failure on %s (%s): the broker delivers it again", message.message_id, exc)
            raise
        except Exception as exc:
            # Even the failure reply failed: the broker redelivers, then dead-letters it.
            log.error(
                "request %s not answered (%s): redelivered, then dead-lettered (DLQ.<queue>)",
                message.message_id,
                type(exc).__name__,
            )
            raise
        payload = json.dumps(reply, separators=(",", ":")).encode()
        sender.send(payload, correlation_id=message.correlation_id, bytes_message=message.bytes_message)
        answered += 1
    return {"answered": answered}
