"""The ABIS consumer without a broker: TLS to the broker, and the note of the request in flight.

stomp+ssl:// verifies the broker's certificate: the broker password is sent over it. stomp.py
before 9.0 did not verify at all unless given a CA file (jasonrbriggs/stomp.py#451), so this
runs the real consumer against a TLS listener on loopback with a self-signed certificate that
answers STOMP's CONNECTED: a client that does not verify would connect."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import stomp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from face_dedup.mosip.broker import AbisConsumer, InFlight
from face_dedup.mosip.config import AbisConfig
from face_dedup.mosip.handlers import AbisHandler


def self_signed(folder: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """A TLS listener with a certificate nobody vouches for that plays a STOMP broker."""
    context = self_signed(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        with suppress(OSError):
            while True:
                raw, _ = listener.accept()
                with suppress(OSError), context.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(5)
                    received.append(tls.recv(4096))  # the CONNECT frame, with the password
                    tls.sendall(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
                    with suppress(OSError):
                        tls.recv(4096)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()


def test_stomp_ssl_refuses_a_broker_whose_certificate_it_cannot_verify(
    impostor: tuple[int, list[bytes]],
) -> None:
    port, received = impostor
    config = AbisConfig(
        broker_url=f"stomp+ssl://127.0.0.1:{port}", broker_user="abis", broker_password="s3cret"
    )
    # connect() never reaches the handler: an unbuilt one will do (no registry needed here)
    consumer = AbisConsumer(config, AbisHandler.__new__(AbisHandler))
    try:
        with pytest.raises((stomp.exception.ConnectFailedException, ssl.SSLError)):
            consumer.connect()
    finally:
        consumer.close()
    assert not any(b"s3cret" in frame for frame in received)  # the password never went out


def test_the_in_flight_note_counts_deaths_and_never_stops_serving(tmp_path: Path) -> None:
    note = InFlight(tmp_path / "abis-inflight.json")
    assert note.begin("ID:1") == 0  # first delivery
    assert note.begin("ID:1") == 1  # delivered again without end(): the process died on it
    assert note.begin("ID:1") == 2
    note.end()
    assert note.begin("ID:1") == 0 and note.begin("ID:2") == 0  # answered, or another request
    (tmp_path / "abis-inflight.json").write_text('{"message_id": "ID:2", "died": "x"}')
    assert note.begin("ID:2") == 0  # an unreadable note counts from zero
    nowhere = InFlight(tmp_path / "missing" / "abis-inflight.json")
    assert nowhere.begin("ID:3") == 0 and nowhere.begin("ID:3") == 0  # unwritable: serves on
    nowhere.end()
