"""Open MOSIP 1.2 encrypted datashare payloads (layout in MOSIP's ABIS API document).

base64url( VER_R2 (6) | certificate thumbprint (32) | RSA-OAEP-SHA256 encrypted AES key (256)
           | "#KEY_SPLITTER#" | AAD (32, its first 12 bytes are the GCM nonce) | AES-GCM data+tag )

The split is at the fixed offset, not the first "#KEY_SPLITTER#" found: random key bytes may
contain that text. Older (1.1.5) payloads have no version bytes and are refused, saying so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from face_dedup.mosip.datashare import DatashareError
from face_dedup.mosip.messages import FailureReason

VERSION = b"VER_R2"
SPLITTER = b"#KEY_SPLITTER#"
_THUMB, _AAD, _NONCE = 32, 32, 12
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _fail(detail: str) -> DatashareError:
    return DatashareError(FailureReason.UNABLE_TO_FETCH_BIOMETRICS, detail)


class PayloadKey:
    """Our partner key: the RSA private key MOSIP encrypts for, and optionally its certificate
    (then the payload's thumbprint must name it, so a share meant for another partner is
    refused before any decryption)."""

    def __init__(self, private_key: rsa.RSAPrivateKey, certificate: x509.Certificate | None = None) -> None:
        self.private_key = private_key
        self.thumbprint = (
            hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
            if certificate is not None
            else None
        )

    @classmethod
    def from_files(
        cls, key_file: Path, cert_file: Path | None = None, password: bytes | None = None
    ) -> PayloadKey:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=password)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_file} is not an RSA private key")
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes()) if cert_file else None
        return cls(key, cert)

    def decrypt(self, payload: bytes) -> bytes:
        try:
            text = payload.strip().decode("ascii")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (UnicodeDecodeError, binascii.Error, ValueError):
            raise _fail("encrypted payload is not base64url") from None
        if not raw.startswith(VERSION):
            raise _fail("encrypted payload is not MOSIP 1.2 (VER_R2) format")
        key_len = self.private_key.key_size // 8
        split_at = len(VERSION) + _THUMB + key_len
        if raw[split_at : split_at + len(SPLITTER)] != SPLITTER:
            raise _fail("encrypted payload has no key splitter where expected")
        thumbprint = raw[len(VERSION) : len(VERSION) + _THUMB]
        if self.thumbprint is not None and thumbprint != self.thumbprint:
            raise _fail("payload is encrypted for another certificate")
        data = raw[split_at + len(SPLITTER) :]
        if len(data) < _AAD + 16:
            raise _fail("encrypted payload is truncated")
        aad = data[:_AAD]
        try:
            aes_key = self.private_key.decrypt(raw[len(VERSION) + _THUMB : split_at], _OAEP)
            return AESGCM(aes_key).decrypt(aad[:_NONCE], data[_AAD:], aad)
        except (ValueError, InvalidTag):
            raise _fail("payload does not decrypt with our key") from None


def encrypt_for(public_key: rsa.RSAPublicKey, plaintext: bytes, thumbprint: bytes = b"\0" * _THUMB) -> bytes:
    """What MOSIP's datashare does, for tests and the conformance recipe's data."""
    import os

    aes_key = AESGCM.generate_key(bit_length=256)
    aad = os.urandom(_AAD)
    sealed = AESGCM(aes_key).encrypt(aad[:_NONCE], plaintext, aad)
    raw = VERSION + thumbprint + public_key.encrypt(aes_key, _OAEP) + SPLITTER + aad + sealed
    return base64.urlsafe_b64encode(raw)
