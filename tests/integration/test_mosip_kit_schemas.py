"""Our replies against the response schemas of MOSIP's own conformance kit (mosip/abis-testing-kit).

The kit is not vendored: point FACE_DEDUP_MOSIP_KIT at a checkout of it (its
src/config/schemas/*_response.json are read from there); without it this test skips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from face_dedup.mosip.datashare import DatashareClient, DatashareConfig
from face_dedup.mosip.handlers import AbisHandler
from face_dedup.mosip.iso_face import face_reader
from face_dedup.service import DedupService
from tests.support.mosip import cbeff_from_photo, datashare_server, request

pytestmark = pytest.mark.shared_data
SCHEMAS = {
    "insert": "insert",
    "identify": "identify",
    "delete": "delete",
    "ping": "ping",
    "pendingJobs": "pending_jobs",
    "referenceCount": "reference_count",
}


def kit_schemas() -> dict[str, Any]:
    kit = os.environ.get("FACE_DEDUP_MOSIP_KIT")
    if not kit:
        pytest.skip("FACE_DEDUP_MOSIP_KIT (a checkout of mosip/abis-testing-kit) is not set")
    folder = Path(kit) / "src" / "config" / "schemas"
    return {op: json.loads((folder / f"{n}_response.json").read_text()) for op, n in SCHEMAS.items()}


def test_every_reply_validates_against_the_kits_schemas(service: DedupService, faces_root: Path) -> None:
    schemas = kit_schemas()
    checked = 0
    with datashare_server() as share:
        client = DatashareClient(DatashareConfig(allow_http=True))
        abis = AbisHandler(service, client.fetch, read_face=face_reader())

        def call(op: str, **fields: Any) -> dict[str, Any]:
            nonlocal checked
            reply = abis.handle(json.dumps(request(op, **fields)))
            jsonschema.validate(reply, schemas[op])
            checked += 1
            return reply

        for ref, photo in (
            ("a1", "lfw/Adrien_Brody/Adrien_Brody_0002.jpg"),
            ("a2", "lfw/Adrien_Brody/Adrien_Brody_0003.jpg"),
            ("b1", "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"),
        ):
            call("insert", referenceId=ref, referenceURL=share.share(cbeff_from_photo(faces_root / photo)))
        call("insert", referenceId="x", referenceURL=share.url("none"))
        assert call("identify", referenceId="a2", referenceURL="")["candidateList"]["count"] == "1"
        call("identify", referenceId="zz", referenceURL="")
        gallery = {"referenceIds": [{"referenceId": "b1"}]}
        call("identify", referenceId="a2", referenceURL="", gallery=gallery, flags={"maxResults": "1"})
        for op in ("ping", "pendingJobs", "referenceCount"):
            call(op)
        call("delete", referenceId="b1")
        call("delete", referenceId="b1")
        client.close()
    assert checked == 12
