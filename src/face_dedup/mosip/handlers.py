"""The six ABIS operations on the core service: one request in, one reply out.

MOSIP's referenceIds are application ids in the ABIS tenant (one record per reference). Insert
enrolls without searching, as the spec demands; identify searches with the registry's
calibration, the threshold following the requested FPIR for the size of what is searched (the
whole partition or the gallery); delete is the product's erasure (index, photos, record, and an
audit receipt). Every request, failed or not, leaves one `mosip.<operation>` audit entry with
ids, outcome and scores only: no biometric data, no URL (it may carry a token).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.calibration import DedupThresholds
from face_dedup.domain import Candidate, Outcome, Record
from face_dedup.errors import NotFound, TransientError
from face_dedup.mosip import messages as m
from face_dedup.mosip.adjudication import open_identify_case
from face_dedup.mosip.cbeff import CbeffEmpty, CbeffError, face_records
from face_dedup.mosip.datashare import DatashareError
from face_dedup.mosip.messages import AbisFailure, AbisRequest, FailureReason
from face_dedup.service import DedupService, InputRef

log = logging.getLogger(__name__)
ACTOR = "mosip-abis"
SOURCE_PREFIX = "mosip:"  # a record's source: the insert request that created it


@dataclass(frozen=True)
class Scored:
    reference_id: str
    record_id: str
    score: float


class AbisHandler:
    def __init__(
        self,
        service: DedupService,
        fetch: Callable[[str], bytes],
        *,
        max_results: int = 30,
        target_fpir: int = 0,
        pending: Callable[[], int] = lambda: 0,
        open_cases: bool = False,
        read_face: Callable[[bytes], bytes],
    ) -> None:
        self.service = service
        # ISO face record -> its image (iso_face.face_reader, with the composition root's decode
        # limits); it raises a CbeffError (FaceRecordError) on an unusable record
        self._read_face = read_face
        self._fetch = fetch
        self._max_results = max_results
        self._target_fpir = target_fpir
        self.pending_jobs = pending
        self._open_cases = open_cases  # identify's candidates become a case for officers
        self._last_identify: dict[str, Any] | None = None  # what identify found, for its audit entry
        self._redelivered = True  # the request being handled may have been delivered before

    def handle(self, body: bytes | str, *, redelivered: bool = True) -> dict[str, Any]:
        """The reply to one message. TransientError propagates: the request is not answered
        and not acknowledged, so the broker delivers it again. `redelivered`: the broker may
        have delivered it before (unknown: True); only then is a delete of an unknown reference
        looked up in the audit log (a scan of it: 15 s and 1.6 GB at a million events)."""
        self._redelivered = redelivered
        request: AbisRequest | None = None
        try:
            request = m.parse_request(body)
            reply = self._dispatch(request)
            self._audit(request.op_id, request.request_id, request.reference_id, reply)
            return reply
        except AbisFailure as failure:
            op_id = request.op_id if request else failure.op_id
            request_id = request.request_id if request else failure.request_id
            reply = m.failure(op_id, request_id, failure.reason)
            self._audit(op_id, request_id, request.reference_id if request else "", reply, failure.detail)
            return reply
        except TransientError:
            raise
        except Exception as exc:  # a bug or a resource failure: answered, never silent
            log.exception("ABIS request failed")
            op_id = request.op_id if request else ""
            request_id = request.request_id if request else ""
            reply = m.failure(op_id, request_id, FailureReason.INTERNAL_ERROR)
            self._audit(op_id, request_id, "", reply, type(exc).__name__)
            return reply

    def awaits_insert(self, body: bytes | str) -> bool:
        """An Identify by a referenceId that is not here (yet): where requests can overtake one
        another (Lambda redelivers a failed Insert after the requests behind it), its Insert
        may still be on its way. Read only; a request that does not parse is not one."""
        try:
            request = m.parse_request(body)
        except AbisFailure:
            return False
        return (
            request.op_id == m.IDENTIFY
            and bool(request.reference_id)
            and not self._records(request.reference_id)
        )

    def refuse_poison(self, body: bytes | str, deaths: int) -> dict[str, Any]:
        """The reply to a request the ABIS died on `deaths` times: failure 1, not processed."""
        try:
            request = m.parse_request(body)
            op_id, request_id, reference_id = request.op_id, request.request_id, request.reference_id
        except AbisFailure as failure:
            op_id, request_id, reference_id = failure.op_id, failure.request_id, ""
        reply = m.failure(op_id, request_id, FailureReason.INTERNAL_ERROR)
        detail = f"not processed: the ABIS stopped {deaths} times while processing this request"
        self._audit(op_id, request_id, reference_id, reply, detail)
        return reply

    def _dispatch(self, request: AbisRequest) -> dict[str, Any]:
        op = request.op_id
        if op == m.PING:
            return m.success(request)
        if op == m.PENDING_JOBS:
            return m.success(request, jobscount=str(self.pending_jobs()))
        if op == m.REFERENCE_COUNT:
            count = self.service.store.count_templates(
                tenant=self.service.tenant, model_pack=self.service.model_pack
            )
            return m.success(request, count=str(count))
        if op == m.INSERT:
            return self._insert(request)
        if op == m.IDENTIFY:
            return self._identify(request)
        return self._delete(request)

    # -- the records of a reference -------------------------------------------------------------

    def _records(self, reference_id: str) -> list[Record]:
        svc = self.service
        return svc.store.find_application_records(
            tenant=svc.tenant, application_id=reference_id, model_pack=svc.model_pack
        )

    def _probe_from_url(self, request: AbisRequest, url: str) -> tuple[FaceTemplate, bytes]:
        """Fetch, parse and analyse the face behind `url`; nothing is written."""

        def fail(reason: FailureReason, detail: str) -> AbisFailure:
            return AbisFailure(reason, detail, op_id=request.op_id, request_id=request.request_id)

        try:
            document = self._fetch(url)
            face = face_records(document)[0]
            image = self._read_face(face.record)
        except DatashareError as exc:
            raise fail(exc.reason, exc.detail) from None
        except CbeffEmpty as exc:
            raise fail(FailureReason.CBEFF_HAS_NO_DATA, str(exc)) from None
        except CbeffError as exc:  # the CBEFF or its ISO face record (FaceRecordError)
            raise fail(FailureReason.INVALID_CBEFF_FORMAT, str(exc)) from None
        analysis = self.service.analyze(image)
        if not isinstance(analysis, FaceTemplate):
            raise fail(FailureReason.QUALITY_CHECK_FAILED, f"{analysis.reason.value}: {analysis.message}")
        return analysis, image

    # -- operations -------------------------------------------------------------------------------

    def _insert(self, request: AbisRequest) -> dict[str, Any]:
        source = SOURCE_PREFIX + request.request_id
        existing = self._records(request.reference_id)
        if existing:
            if any(r.source == source for r in existing):
                return m.success(request)  # this very request, delivered again after a restart
            raise AbisFailure(FailureReason.REFERENCE_ID_EXISTS, "referenceId already inserted")
        _, image = self._probe_from_url(request, request.reference_url)  # all checks before any write
        ref = InputRef(source=source, application_id=request.reference_id)
        item = self.service.enroll_without_search(image, ref, actor=ACTOR)
        if item.outcome is Outcome.REJECTED:
            raise AbisFailure(FailureReason.QUALITY_CHECK_FAILED, f"{item.reason}: {item.message}")
        return m.success(request)

    def _delete(self, request: AbisRequest) -> dict[str, Any]:
        records = self._records(request.reference_id)
        if not records:
            if self._redelivered and self._already_done(m.DELETE, request.request_id, request.reference_id):
                return m.success(request)
            raise AbisFailure(FailureReason.REFERENCE_ID_NOT_FOUND, "referenceId not in the ABIS")
        for record in records:
            try:
                self.service.erase(record.record_id, ACTOR, f"MOSIP delete request {request.request_id}")
            except NotFound:
                continue  # erased meanwhile
        return m.success(request)

    def _identify(self, request: AbisRequest) -> dict[str, Any]:
        probes: list[Record] = []
        if request.reference_id:
            probes = self._records(request.reference_id)
            if not probes:
                raise AbisFailure(FailureReason.REFERENCE_ID_NOT_FOUND, "referenceId not in the ABIS")
            probe = probes[0].embedding
        else:
            probe = self._probe_from_url(request, request.reference_url)[0].embedding
        max_results = int(request.flags.get("maxResults", self._max_results))
        gallery = self._gallery(request) if request.gallery else None
        searched = len(gallery) if gallery is not None else self._partition_size(request)
        limits = self._thresholds(searched, self._fpir(request.flags))
        if gallery is not None:
            scored = [
                max(
                    (Scored(ref, r.record_id, float(np.dot(r.embedding, probe))) for r in rs),
                    key=lambda c: c.score,
                )
                for ref, rs in gallery.items()
            ]
        else:
            scored = self._search(probe, request, limits.review, max_results)
        matches = sorted((c for c in scored if c.score >= limits.review), key=lambda c: -c.score)[
            :max_results
        ]
        self._last_identify = {
            "searched": searched,
            "threshold": round(limits.review, 4),
            "target_fpir": self._fpir(request.flags),
            "candidates": [{"reference_id": c.reference_id, "score": round(c.score, 4)} for c in matches],
        }
        if self._open_cases and probes and matches:
            self._last_identify["case_id"] = open_identify_case(
                self.service,
                probes[0].record_id,
                [Candidate(c.record_id, c.score, None, c.reference_id) for c in matches],
                {
                    "review": round(limits.review, 4),
                    "duplicate": round(limits.duplicate, 4),
                    "gallery_size": searched,
                    "target_fpir": self._fpir(request.flags),
                    "model_pack": self.service.model_pack,
                    "calibration": self.service.tail.source,
                    "band": "duplicate" if matches[0].score >= limits.duplicate else "review",
                    "reason": "MOSIP identify " + request.request_id,
                },
            )
        candidates = [self._candidate(c, limits.review, limits.duplicate) for c in matches]
        return m.success(request, candidateList={"count": str(len(candidates)), "candidates": candidates})

    def _thresholds(self, searched: int, fpir: float) -> DedupThresholds:
        """The registry's calibration at the FPIR MOSIP asked for, for what is searched; never
        below the registry's floors."""
        return self.service.policy.at_fpir(fpir).thresholds(max(1, searched))

    def _gallery(self, request: AbisRequest) -> dict[str, list[Record]]:
        """The gallery's references that are in the ABIS (others are not searched: never
        returned), less the probe itself."""
        found = {}
        for reference_id in request.gallery or ():
            if reference_id != request.reference_id:
                records = self._records(reference_id)
                if records:
                    found[reference_id] = records
        return found

    def _partition_size(self, request: AbisRequest) -> int:
        svc = self.service
        size = svc.index.count(tenant=svc.tenant, model_pack=svc.model_pack)
        own = len(self._records(request.reference_id)) if request.reference_id else 0
        return max(0, size - own)

    def _search(
        self, probe: NDArray[np.float32], request: AbisRequest, threshold: float, max_results: int
    ) -> list[Scored]:
        svc = self.service
        hits = svc.index.search(
            probe,
            tenant=svc.tenant,
            model_pack=svc.model_pack,
            k=max_results + 1 + len(self._records(request.reference_id) if request.reference_id else []),
            min_score=threshold,
        )
        records = svc.store.describe_records(h.record_id for h in hits)
        best: dict[str, Scored] = {}
        for hit in hits:
            record = records.get(hit.record_id)
            if record is None or not record.application_id or record.application_id == request.reference_id:
                continue  # an erasure in progress, a record that is not a reference, the probe
            score = float(np.dot(record.embedding, probe))  # the decision's score is computed here
            if record.application_id not in best or score > best[record.application_id].score:
                best[record.application_id] = Scored(record.application_id, record.record_id, score)
        return list(best.values())

    def _fpir(self, flags: dict[str, str]) -> float:
        encoded = int(flags.get("targetFPIR", self._target_fpir) or 0)
        if encoded <= 0:
            return self.service.policy.target_fpir
        # MOSIP: targetFPIR = round(-10 log10 FPIR); kept within what a threshold can express
        return min(0.5, max(1e-20, 10 ** (-encoded / 10)))

    def _candidate(self, c: Scored, review: float, duplicate: float) -> dict[str, Any]:
        fmr = self.service.tail.fmr_at(c.score)
        analytics = {
            "score": f"{c.score:.4f}",
            "internalScore": str(round(c.score * 100)),
            "falseMatchRate": f"{fmr:.2e}",
            "targetFPIRScore": str(round(-10 * math.log10(fmr))) if fmr > 0 else "",
            "threshold": f"{review:.4f}",
            "band": "duplicate" if c.score >= duplicate else "review",
            "modelPack": self.service.model_pack,
        }
        return {
            "referenceId": c.reference_id,
            "analytics": analytics,
            "modalities": [{"biometricType": "FID", "analytics": dict(analytics)}],
        }

    # -- audit ------------------------------------------------------------------------------------

    def _already_done(self, op_id: str, request_id: str, reference_id: str) -> bool:
        """This request succeeded before (a redelivery after a crash between work and ack). The
        referenceId must match too: a requestId reused for another reference is not a redelivery."""
        for event in reversed(self.service.store.audit_events(tenant=self.service.tenant)):
            d = event.details
            if (
                event.action == "mosip." + op_id.rsplit(".", 1)[-1]
                and d.get("request_id") == request_id
                and d.get("reference_id") == reference_id
            ):
                return d.get("return_value") == m.SUCCESS
        return False

    def _audit(
        self, op_id: str, request_id: str, reference_id: str, reply: dict[str, Any], detail: str = ""
    ) -> None:
        operation = op_id.rsplit(".", 1)[-1] if op_id in m.OPERATIONS else "invalid"
        if operation in ("ping", "pendingJobs"):
            return  # liveness probes: no registry data touched, nothing to account for
        extra = self._last_identify if operation == "identify" else None
        self._last_identify = None
        self.service.record_event(
            "mosip." + operation,
            ACTOR,
            request_id=request_id,
            reference_id=reference_id,
            return_value=reply["returnValue"],
            failure_reason=reply.get("failureReason", ""),
            detail=detail[:200],
            **({"identify": extra} if extra else {}),
        )
