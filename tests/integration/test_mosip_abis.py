"""The six ABIS operations on the real core (models, SQLite, index) with CBEFF files built from
the shared photos and served by a real HTTP datashare on loopback."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from face_dedup.domain import Actor, CaseDecision, Role
from face_dedup.errors import InvalidState, TransientError
from face_dedup.mosip.adjudication import adjudication_reply
from face_dedup.mosip.app import build_abis
from face_dedup.mosip.cbeff import build_cbeff
from face_dedup.mosip.config import AbisConfig
from face_dedup.mosip.crypto import encrypt_for
from face_dedup.mosip.datashare import DatashareClient, DatashareConfig
from face_dedup.mosip.handlers import AbisHandler
from face_dedup.mosip.iso_face import JP2_LOSSLESS, face_reader, write_face_record
from face_dedup.queries import Reader, RegistryQueries, TenantReader
from face_dedup.service import DedupService
from face_dedup.settings import Settings
from tests.support.mosip import Datashare, assert_reply_shape, cbeff_from_photo, datashare_server, request

pytestmark = pytest.mark.shared_data

A1, A2, A3 = (f"lfw/Adrien_Brody/Adrien_Brody_{n:04d}.jpg" for n in (2, 3, 5))
B1 = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
C1 = "lfw/Abdullah_Gul/Abdullah_Gul_0001.jpg"


@pytest.fixture
def share() -> Iterator[Datashare]:
    with datashare_server() as running:
        yield running


@pytest.fixture
def abis(service: DedupService, share: Datashare) -> Iterator[AbisHandler]:
    client = DatashareClient(DatashareConfig(allow_http=True, token="t0ken"))
    yield AbisHandler(service, client.fetch, read_face=face_reader())
    client.close()


def call(abis: AbisHandler, body: dict[str, Any]) -> dict[str, Any]:
    reply = abis.handle(json.dumps(body).encode())
    assert reply["requestId"] == body["requestId"] and reply["id"] == body["id"]
    assert_reply_shape(reply)
    return reply


def insert(
    abis: AbisHandler, share: Datashare, faces: Path, ref: str, photo: str, **kw: Any
) -> dict[str, Any]:
    url = share.share(cbeff_from_photo(faces / photo, **kw))
    return call(abis, request("insert", referenceId=ref, referenceURL=url))


def identify(abis: AbisHandler, **fields: Any) -> list[dict[str, Any]]:
    reply = call(abis, request("identify", **({"referenceURL": ""} | fields)))
    assert reply["returnValue"] == "1", reply
    candidates: list[dict[str, Any]] = reply["candidateList"]["candidates"]
    assert reply["candidateList"]["count"] == str(len(candidates))
    return candidates


def count(abis: AbisHandler) -> int:
    return int(call(abis, request("referenceCount"))["count"])


def test_duplicates_found_across_inserts_gallery_and_max_results(
    abis: AbisHandler, share: Datashare, faces_root: Path
) -> None:
    for ref, photo in (("a1", A1), ("b1", B1), ("c1", C1), ("a2", A2)):
        assert insert(abis, share, faces_root, ref, photo)["returnValue"] == "1"
    assert insert(abis, share, faces_root, "a3", A3, jpeg2000=False)["returnValue"] == "1"  # JPEG inside
    assert count(abis) == 5
    assert share.cookies and all(c == "Authorization=t0ken" for c in share.cookies)

    found = identify(abis, referenceId="a3")
    assert {c["referenceId"] for c in found} == {"a1", "a2"}  # never the probe, never others
    best = found[0]
    assert best["modalities"][0]["biometricType"] == "FID"
    analytics = best["analytics"]
    assert all(isinstance(v, str) for v in analytics.values())
    assert float(analytics["score"]) >= float(analytics["threshold"]) > 0
    assert float(analytics["falseMatchRate"]) < 1e-3
    assert float(found[0]["analytics"]["score"]) >= float(found[1]["analytics"]["score"])

    (only,) = identify(abis, referenceId="a3", flags={"maxResults": "1"})
    assert only["referenceId"] == best["referenceId"]
    gallery = {"referenceIds": [{"referenceId": "b1"}, {"referenceId": "a2"}, {"referenceId": "zz"}]}
    assert [c["referenceId"] for c in identify(abis, referenceId="a3", gallery=gallery)] == ["a2"]
    assert identify(abis, referenceId="b1") == []

    # by referenceURL: nothing is stored for the probe
    url = share.share(cbeff_from_photo(faces_root / "lfw/Adrien_Brody/Adrien_Brody_0007.jpg"))
    assert {c["referenceId"] for c in identify(abis, referenceId="", referenceURL=url)} == {"a1", "a2", "a3"}
    assert count(abis) == 5


def test_target_fpir_sets_the_threshold_for_the_searched_size(
    abis: AbisHandler, share: Datashare, faces_root: Path, service: DedupService
) -> None:
    for ref, photo in (("a1", A1), ("b1", B1), ("a2", A2)):
        insert(abis, share, faces_root, ref, photo)
    identify(abis, referenceId="a2", flags={"targetFPIR": "20"})
    identify(abis, referenceId="a2", flags={"targetFPIR": "60"})
    assert identify(abis, referenceId="a2", flags={"targetFPIR": "9999"}) == []  # absurd, still answered
    identify(
        abis, referenceId="a2", flags={"targetFPIR": "60"}, gallery={"referenceIds": [{"referenceId": "a1"}]}
    )
    events = [e.details["identify"] for e in service.store.audit_events() if e.action == "mosip.identify"]
    loose, strict, absurd, one = events
    assert absurd["threshold"] >= strict["threshold"]
    assert loose["searched"] == strict["searched"] == 2 and one["searched"] == 1
    assert loose["target_fpir"] == pytest.approx(1e-2) and strict["target_fpir"] == pytest.approx(1e-6)
    assert strict["threshold"] > loose["threshold"]
    assert one["threshold"] < strict["threshold"]  # one comparison needs a lower threshold than two


def test_insert_rules_and_failures_write_nothing(
    abis: AbisHandler, share: Datashare, faces_root: Path, service: DedupService
) -> None:
    first = request("insert", referenceId="a1", referenceURL=share.share(cbeff_from_photo(faces_root / A1)))
    assert call(abis, first)["returnValue"] == "1"
    assert call(abis, first)["returnValue"] == "1"  # the same request delivered again
    again = request("insert", referenceId="a1", referenceURL=share.share(cbeff_from_photo(faces_root / B1)))
    assert call(abis, again)["failureReason"] == "10"

    def failure_of(url: str, ref: str = "x1") -> str:
        return str(call(abis, request("insert", referenceId=ref, referenceURL=url))["failureReason"])

    expired = {"errors": [{"errorCode": "DAT-SER-006", "message": "Data share usage expired"}]}
    assert failure_of(share.url("missing")) == "7"
    assert failure_of(share.share(json.dumps(expired).encode())) == "17"
    assert failure_of(share.share(b"<html>login</html>")) == "16"
    assert failure_of(share.share(b"<BIR><BIR><BDBInfo><Type>Face</Type></BDBInfo></BIR></BIR>")) == "11"
    assert failure_of(share.share(build_cbeff(b"FAC\x00030\x00garbage"))) == "16"
    blank = io.BytesIO()
    Image.new("RGB", (320, 400), (200, 190, 180)).save(blank, "JPEG2000", irreversible=False)
    no_face = build_cbeff(write_face_record(blank.getvalue(), JP2_LOSSLESS, 320, 400))
    assert failure_of(share.share(no_face)) == "18"
    assert count(abis) == 1
    assert service.index.count(tenant=service.tenant, model_pack=service.model_pack) == 1
    failed = [
        e for e in service.store.audit_events() if e.action == "mosip.insert" and e.details["failure_reason"]
    ]
    assert sorted(e.details["failure_reason"] for e in failed) == ["10", "11", "16", "16", "17", "18", "7"]
    assert not any("http" in json.dumps(e.details) for e in failed)  # no URL (tokens) in the audit


def test_delete_is_erasure_with_a_receipt(
    abis: AbisHandler, share: Datashare, faces_root: Path, service: DedupService
) -> None:
    insert(abis, share, faces_root, "a1", A1)
    insert(abis, share, faces_root, "a2", A2)
    delete = request("delete", referenceId="a1")
    assert call(abis, delete)["returnValue"] == "1"
    assert call(abis, delete)["returnValue"] == "1"  # delivered again: answered as before
    # the same requestId naming a reference never inserted is not a redelivery: not found
    assert call(abis, delete | {"referenceId": "never-inserted"})["failureReason"] == "12"
    # a first delivery is never a redelivery: no audit scan, the reference is simply not found
    assert abis.handle(json.dumps(delete).encode(), redelivered=False)["failureReason"] == "12"
    assert call(abis, request("delete", referenceId="a1"))["failureReason"] == "12"
    assert call(abis, request("identify", referenceId="a1", referenceURL=""))["failureReason"] == "12"
    assert identify(abis, referenceId="a2") == []
    assert count(abis) == 1
    receipts = [e for e in service.store.audit_events() if e.action == "record.erased"]
    assert len(receipts) == 1 and receipts[0].details["application_id"] == "a1"
    assert service.blobs.keys(f"{service.tenant}/{receipts[0].details['record_id']}/") == []
    # the same referenceId can be inserted again after its deletion
    assert insert(abis, share, faces_root, "a1", A1)["returnValue"] == "1"


def test_ping_pending_jobs_and_unparseable_messages(abis: AbisHandler) -> None:
    assert call(abis, request("ping"))["returnValue"] == "1"
    assert call(abis, request("pendingJobs"))["jobscount"] == "0"
    reply = abis.handle(b"\x00garbage")
    assert_reply_shape(reply)
    assert reply["returnValue"] == "2" and reply["failureReason"] == "4" and reply["requestId"] == ""


def _reader(service: DedupService) -> TenantReader:
    """The reads `face-dedup abis-reply` makes (the operator's, of the ABIS tenant)."""
    return RegistryQueries(service.store, service.blobs).reader(Reader.OPERATOR, service.tenant)


def test_identify_opens_a_case_and_the_two_person_decision_becomes_a_mas_reply(
    service: DedupService, share: Datashare, faces_root: Path
) -> None:
    client = DatashareClient(DatashareConfig(allow_http=True))
    abis = AbisHandler(service, client.fetch, open_cases=True, read_face=face_reader())
    for ref, photo in (("a1", A1), ("b1", B1), ("a2", A2)):
        insert(abis, share, faces_root, ref, photo)
    assert identify(abis, referenceId="b1") == []  # nothing found: no case
    assert [c["referenceId"] for c in identify(abis, referenceId="a2")] == ["a1"]
    identify(abis, referenceId="a2")  # asked again: still one case
    (case,) = service.store.list_cases(tenant=service.tenant)
    assert case.candidates[0].application_id == "a1"
    with pytest.raises(InvalidState):
        adjudication_reply(_reader(service), case.case_id, "mas-1")  # nobody decided yet

    officer, supervisor = Actor("officer-7", Role.OFFICER), Actor("super-2", Role.SUPERVISOR)
    service.decide_case(case.case_id, CaseDecision.SAME_PERSON, officer, "same ears and scar")
    with pytest.raises(InvalidState):
        adjudication_reply(_reader(service), case.case_id, "mas-1")  # one person is not enough
    service.confirm_case(case.case_id, supervisor, True, "agree")
    reply = adjudication_reply(_reader(service), case.case_id, "mas-1")
    assert reply["id"] == "mosip.manual.adjudication.adjudicate" and reply["requestId"] == "mas-1"
    assert reply["candidateList"]["count"] == "1"
    (candidate,) = reply["candidateList"]["candidates"]
    assert candidate["referenceId"] == "a1"
    assert candidate["analytics"]["primaryOperatorID"] == "officer-7"
    assert candidate["analytics"]["primaryOperatorComments"] == "same ears and scar"
    assert candidate["analytics"]["secondaryOperatorID"] == "super-2"
    assert candidate["analytics"]["secondaryOperatorComments"] == "agree"
    client.close()


def test_different_people_is_a_mas_reply_without_candidates(
    service: DedupService, share: Datashare, faces_root: Path
) -> None:
    client = DatashareClient(DatashareConfig(allow_http=True))
    abis = AbisHandler(service, client.fetch, open_cases=True, read_face=face_reader())
    for ref, photo in (("a1", A1), ("a2", A2)):
        insert(abis, share, faces_root, ref, photo)
    identify(abis, referenceId="a2")
    (case,) = service.store.list_cases(tenant=service.tenant)
    service.decide_case(case.case_id, CaseDecision.DIFFERENT_PEOPLE, Actor("o", Role.OFFICER), "twins")
    reply = adjudication_reply(_reader(service), case.case_id, "mas-2")
    assert reply["candidateList"] == {"count": "0", "candidates": []}
    client.close()


def test_internal_errors_are_answered_and_transient_ones_are_not(service: DedupService) -> None:
    def broken(url: str) -> bytes:
        raise RuntimeError("disk on fire")

    abis = AbisHandler(service, broken, read_face=face_reader())
    reply = call(abis, request("insert", referenceId="r1", referenceURL="https://mosip.example/x"))
    assert reply["failureReason"] == "1"
    (event,) = [e for e in service.store.audit_events() if e.action == "mosip.insert"]
    assert event.details["detail"] == "RuntimeError"

    def unavailable(url: str) -> bytes:
        raise TransientError("index briefly down")

    with pytest.raises(TransientError):
        AbisHandler(service, unavailable, read_face=face_reader()).handle(
            json.dumps(request("insert", referenceId="r1", referenceURL="https://mosip.example/x"))
        )


def test_the_composed_abis_opens_mosip_1_2_encrypted_shares(
    base_settings: Settings, tmp_path: Path, share: Datashare, faces_root: Path
) -> None:
    """The composition root (settings -> key file -> datashare -> handler) on an encrypted share."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "partner.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    config = AbisConfig.load(
        {},
        decrypt_key_file=str(key_file),
        datashare_allow_http=True,
        datashare_hosts="127.0.0.1",
    )
    abis = build_abis(base_settings.with_overrides(data_dir=tmp_path / "registry"), config)
    try:
        sealed = encrypt_for(key.public_key(), cbeff_from_photo(faces_root / A1))
        assert insert_url(abis.handler, "a1", share.share(sealed))["returnValue"] == "1"
        plain = share.share(cbeff_from_photo(faces_root / B1))
        assert insert_url(abis.handler, "b1", plain)["failureReason"] == "7"  # not encrypted for us
        assert abis.handler.service.tenant == "mosip" and count(abis.handler) == 1
    finally:
        abis.close()


def insert_url(abis: AbisHandler, ref: str, url: str) -> dict[str, Any]:
    return call(abis, request("insert", referenceId=ref, referenceURL=url))
