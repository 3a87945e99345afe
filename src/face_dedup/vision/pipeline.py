"""The face engine: image bytes in, one subject face's template out, or a typed rejection."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import InputRejected, Reason
from face_dedup.models.registry import ModelPack
from face_dedup.ports import FaceAnalyzer
from face_dedup.vision.align import SimilarityFit, fit_similarity, warp_to_template
from face_dedup.vision.decode import DecodedImage, DecodeLimits, decode_image
from face_dedup.vision.detect import DetectedFace, YuNetDetector
from face_dedup.vision.embed import SFaceEmbedder
from face_dedup.vision.quality import QualityIssue, QualityThresholds, assess, crop_measures, pose_measures


@dataclass(frozen=True)
class FaceTemplate:
    """What one photo yields: the embedding of its subject and how it was obtained.
    `measures` and `notes` carry no biometric data and may be logged and audited."""

    embedding: NDArray[np.float32]
    model_pack: str
    aligned_crop: NDArray[np.uint8]
    box: tuple[float, float, float, float]
    measures: dict[str, float]
    notes: tuple[str, ...]
    image_format: str
    faces_found: int
    rotation_degrees: int = 0


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    message: str
    measures: dict[str, float] = field(default_factory=dict)
    issues: tuple[QualityIssue, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    face: DetectedFace
    fit: SimilarityFit
    image: NDArray[np.uint8]
    rotation: int
    faces: list[DetectedFace]


_ROTATIONS = (0, 90, 270, 180)  # degrees clockwise; upright first, then the common sideways cases


def _rotate(rgb: NDArray[np.uint8], degrees: int) -> NDArray[np.uint8]:
    # np.rot90 turns counter-clockwise for positive k.
    return np.ascontiguousarray(np.rot90(rgb, k=-(degrees // 90)))


class FaceEngine(FaceAnalyzer):
    def __init__(
        self,
        pack: ModelPack,
        detector: YuNetDetector,
        embedder: SFaceEmbedder,
        thresholds: QualityThresholds | None = None,
        limits: DecodeLimits | None = None,
    ) -> None:
        self.pack = pack
        self._detector = detector
        self._embedder = embedder
        self._thresholds = thresholds or QualityThresholds()
        self._limits = limits or DecodeLimits()
        self._template = np.asarray(pack.contract.template, dtype=np.float64)

    def detect(self, rgb: NDArray[np.uint8]) -> list[DetectedFace]:
        """Every face in an upright RGB image, largest first (no subject choice, no quality)."""
        return self._detector.detect(rgb)

    def embed(self, aligned_rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The embedding of an already aligned crop (benchmarks time this stage alone)."""
        return self._embedder.embed(aligned_rgb)

    def process(self, data: bytes) -> FaceTemplate | Rejection:
        try:
            decoded = decode_image(data, self._limits)
        except InputRejected as exc:
            return Rejection(exc.reason, exc.message, _limit_measures(exc))
        return self.process_decoded(decoded)

    def process_decoded(self, decoded: DecodedImage) -> FaceTemplate | Rejection:
        t = self._thresholds
        candidate, faces_upright = self._find_subject(decoded.rgb)
        if candidate is None:
            if not faces_upright:
                return Rejection(Reason.NO_FACE, "no face was found in the photo", {"faces_found": 0})
            best = faces_upright[0]
            fit = fit_similarity(best.landmarks, self._template)
            return Rejection(
                Reason.IMPLAUSIBLE_LANDMARKS,
                "a face-like region was found but its landmarks fit no upright face in any "
                "orientation (rotated, profile, or not a face)",
                {
                    "faces_found": len(faces_upright),
                    "detector_score": best.score,
                    "landmark_residual": fit.residual,
                    "roll_degrees": fit.roll_degrees,
                },
            )

        subject = candidate.face
        notes: list[str] = list(decoded.notes)
        # A rival is a confident face of comparable size about as central as the subject: then
        # the photo shows two people and no rule can say which one applied.
        subject_offset = center_offset(subject, candidate.image)
        rivals = [
            other
            for other in candidate.faces
            if other is not subject
            and other.score >= t.min_detection_score
            and other.inter_eye_px >= t.rival_face_ratio * subject.inter_eye_px
            and center_offset(other, candidate.image) < subject_offset + t.rival_center_margin
        ]
        measures: dict[str, float] = {
            "faces_found": len(candidate.faces),
            "detector_score": subject.score,
            "roll_degrees": candidate.fit.roll_degrees,
            "landmark_residual": candidate.fit.residual,
        }
        if rivals:
            measures["rival_size_ratio"] = max(r.inter_eye_px for r in rivals) / subject.inter_eye_px
            return Rejection(
                Reason.MULTIPLE_FACES,
                f"{len(rivals) + 1} faces of similar size: the photo must show one person",
                measures,
            )
        if len(candidate.faces) > 1:
            notes.append(
                f"subject is the most central large face; {len(candidate.faces) - 1} other "
                "face(s) were smaller, off-centre or low-confidence and were ignored"
            )
        if candidate.rotation:
            notes.append(f"photo was rotated {candidate.rotation} degrees clockwise to make the face upright")

        size = self._template_size()
        aligned = warp_to_template(candidate.image, candidate.fit, size)
        mapped = (candidate.fit.matrix[:, :2] @ subject.landmarks.T).T + candidate.fit.matrix[:, 2]
        yaw_ratio, pitch_offset = pose_measures(mapped)
        crop = crop_measures(aligned)
        # Eye distance in the photo as submitted, not in the reduced working copy.
        inter_eye_px = subject.inter_eye_px / decoded.scale
        measures.update(
            inter_eye_px=inter_eye_px,
            yaw_ratio=yaw_ratio,
            pitch_offset=pitch_offset,
            sharpness=crop.sharpness,
            brightness=crop.brightness,
            overexposed=crop.overexposed,
            underexposed=crop.underexposed,
        )
        issues = assess(
            t,
            score=subject.score,
            inter_eye_px=inter_eye_px,
            yaw_ratio=yaw_ratio,
            pitch_offset=pitch_offset,
            crop=crop,
        )
        if issues:
            first = issues[0]
            return Rejection(first.reason, first.message, measures, tuple(issues))

        embedding = self._embedder.embed(aligned)
        return FaceTemplate(
            embedding=embedding,
            model_pack=self.pack.id,
            aligned_crop=aligned,
            box=tuple(v / decoded.scale for v in subject.box),  # type: ignore[arg-type]
            measures=measures,
            notes=tuple(notes),
            image_format=decoded.format,
            faces_found=len(candidate.faces),
            rotation_degrees=candidate.rotation,
        )

    def _template_size(self) -> tuple[int, int]:
        return self.pack.contract.input_size

    def _plausible(self, fit: SimilarityFit) -> bool:
        t = self._thresholds
        return abs(fit.roll_degrees) <= t.max_roll_degrees and fit.residual <= t.max_landmark_residual

    def _find_subject(self, rgb: NDArray[np.uint8]) -> tuple[_Candidate | None, list[DetectedFace]]:
        """The subject face, tried upright first.

        Among confident faces whose landmarks fit an upright face and that are at least half
        the size of the largest, the subject is the most central one (photos are framed on
        their subject; the largest face is sometimes a bystander's). A sideways or upside-down
        face often still gets a box, but with landmarks no upright face has; then the photo is
        tried at 90, 270 and 180 degrees and the most confident plausible subject wins.
        The same happens when the upright subject's score is not clearly that of an upright face.
        Returns the candidate (or None) and the upright detections.
        """
        t = self._thresholds
        upright_faces: list[DetectedFace] = []
        best: _Candidate | None = None
        for rotation in _ROTATIONS:
            image = rgb if rotation == 0 else _rotate(rgb, rotation)
            faces = self._detector.detect(image)
            if rotation == 0:
                upright_faces = faces
            plausible = []
            for face in faces:
                fit = fit_similarity(face.landmarks, self._template)
                if self._plausible(fit):
                    plausible.append((face, fit))
            confident = [(f, fit) for f, fit in plausible if f.score >= t.min_detection_score]
            pool = confident or plausible[:1]  # a lone low-score face is kept to say LOW_CONFIDENCE
            if pool:
                largest = max(face.inter_eye_px for face, _ in pool)
                eligible = [(f, fit) for f, fit in pool if f.inter_eye_px >= 0.5 * largest]
                face, fit = min(eligible, key=lambda pair: center_offset(pair[0], image))
                candidate = _Candidate(face, fit, image, rotation, faces)
                if best is None or face.score > best.face.score:
                    best = candidate
            # YuNet also "finds" upside-down and some sideways faces with upright-looking
            # landmarks, but always with a lower score than the same face upright (measured on
            # LFW: rotated copies never beat the upright one, and stayed below ~0.91). So an
            # upright subject above `upright_confident_score` ends the search; anything less is
            # compared with the other orientations and the most confident wins.
            if best is not None and best.rotation == 0 and best.face.score >= t.upright_confident_score:
                break
        return best, upright_faces


def center_offset(face: DetectedFace, image: NDArray[np.uint8]) -> float:
    """Distance of the face box centre from the image centre, as a fraction of the diagonal."""
    height, width = image.shape[:2]
    x, y, w, h = face.box
    return float(np.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2) / np.hypot(width, height))


def _limit_measures(exc: InputRejected) -> dict[str, float]:
    measures: dict[str, float] = {}
    if exc.measured is not None:
        measures["measured"] = float(exc.measured)
    if exc.limit is not None:
        measures["limit"] = float(exc.limit)
    return measures
