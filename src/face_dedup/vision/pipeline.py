"""The face engine: image bytes in, one subject face's template out, or a typed rejection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate as FaceTemplate  # re-exported: callers import them here too
from face_dedup.analysis import Rejection as Rejection
from face_dedup.errors import InputRejected, Reason
from face_dedup.models.registry import ModelPack
from face_dedup.ports import FaceAnalyzer
from face_dedup.vision.align import SimilarityFit, fit_similarity, warp_to_template
from face_dedup.vision.decode import DecodedImage, DecodeLimits, decode_image, sniff_format
from face_dedup.vision.detect import DetectedFace, YuNetDetector
from face_dedup.vision.embed import SFaceEmbedder
from face_dedup.vision.png import encode_png
from face_dedup.vision.quality import QualityThresholds, assess, crop_measures, pose_measures
from face_dedup.vision.runtimes import OPENVINO_BF16


@dataclass(frozen=True)
class _Candidate:
    face: DetectedFace
    fit: SimilarityFit
    image: NDArray[np.uint8]
    rotation: int
    faces: list[DetectedFace]


@dataclass(frozen=True)
class _Source:
    """What the aligned crop is cut from: an image in the candidate's orientation, the
    subject's landmarks in it, their fit, and the image's pixels per original pixel."""

    image: NDArray[np.uint8]
    landmarks: NDArray[np.float64]
    fit: SimilarityFit
    scale: float


# Selfie path: below this eye distance in the detector's small working copy the full path
# decides. Small faces need the full working size, and so do rivals: a face 0.6x the
# subject's (MULTIPLE_FACES) must still have eyes >= 12 px apart there to be found. The crop
# for the landmark refinement reaches this many box sizes from the face centre, and is
# detected at most this large; it is cut from an image where the eyes are at least this many
# template eye distances apart.
_REDUCED_MIN_EYE_PX = 20.0
_REFINE_MARGIN = 1.0
_REFINE_SIDE = 200
_REFINE_DETAIL = 1.0

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

    @property
    def embedder_runtime(self) -> str:
        """Where the embedder runs (vision/runtimes.py): onnxruntime, or openvino-bf16."""
        return self._embedder.runtime

    def threads_per_core(self) -> int:
        # OpenVINO runs the embedder on its own stream threads (one per core) while the calling
        # thread waits: with one analysis thread per core the cores idled in those hand-offs
        # (bench/import_path.py, 800 LFW photos, 2 cores: 56 images/s with 2 threads, 70.6 with 3,
        # 72.9 with 4; onnxruntime computes in the caller: 41.3 with 2, 40.5 with 3).
        return 2 if self._embedder.runtime == OPENVINO_BF16 else 1

    def crop_png(self, crop: NDArray[np.uint8]) -> bytes:
        return encode_png(crop)

    def detect(self, rgb: NDArray[np.uint8]) -> list[DetectedFace]:
        """Every face in an upright RGB image, largest first (no subject choice, no quality)."""
        return self._detector.detect(rgb)

    def embed(self, aligned_rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The embedding of an already aligned crop (benchmarks time this stage alone)."""
        return self._embedder.embed(aligned_rgb)

    def embed_crop(self, png: bytes) -> NDArray[np.float32] | None:
        import cv2

        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        width, height = self.pack.contract.input_size
        if bgr is None or bgr.shape != (height, width, 3):
            return None
        return self.embed(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))

    def process(self, data: bytes) -> FaceTemplate | Rejection:
        if self._limits.selfie_long_side > 0 and sniff_format(data) == "JPEG":
            fast = self._process_reduced(data)
            if fast is not None:
                return fast
        try:
            decoded = decode_image(data, self._limits)
        except InputRejected as exc:
            return Rejection(exc.reason, exc.message, _limit_measures(exc))
        return self.process_decoded(decoded)

    def process_decoded(self, decoded: DecodedImage) -> FaceTemplate | Rejection:
        candidate, faces_upright = self._find_subject(decoded.rgb)
        return self._judge(decoded, candidate, faces_upright, None)

    def _process_reduced(self, data: bytes) -> FaceTemplate | Rejection | None:
        """The selfie path: a large JPEG decoded at 1/2-1/8 scale (DCT scaling), the subject
        found on that small copy, its landmarks refined on a face-sized crop with at least the
        template's detail. None when it does not apply (small photo, no clear large face, any
        decoding problem): then the ordinary path decides, so rejections read the same."""
        try:
            small = decode_image(data, self._limits, reduce_to=self._limits.selfie_long_side)
        except InputRejected:
            return None
        if small.scale >= 1.0:
            return None
        candidate, faces_upright = self._find_subject(small.rgb, max_side=self._limits.selfie_long_side)
        detector_scale = min(1.0, self._limits.selfie_long_side / max(small.rgb.shape[:2]))
        if candidate is None or candidate.face.inter_eye_px * detector_scale < _REDUCED_MIN_EYE_PX:
            return None
        return self._judge(small, candidate, faces_upright, lambda c: self._refine(data, small, c))

    def _refine(self, data: bytes, small: DecodedImage, candidate: _Candidate) -> _Source:
        """Where the aligned crop of the selfie path comes from. The small copy serves when the
        face has at least the template's eye distance there (downsampling in the DCT loses
        nothing the 112 px template keeps); otherwise the photo is decoded less reduced, only
        as much as needed. The detector then runs again on a crop around the face, so the
        landmarks are as precise as on an LFW-size photo of that face."""
        face = candidate.face
        template_eye = float(np.linalg.norm(self._template[1] - self._template[0]))
        image, scale = candidate.image, small.scale
        if face.inter_eye_px < _REFINE_DETAIL * template_eye:
            long_side = max(small.rgb.shape[:2]) * _REFINE_DETAIL * template_eye / face.inter_eye_px
            try:
                finer = decode_image(data, self._limits, reduce_to=int(np.ceil(long_side)))
            except InputRejected:  # decoded once already; nothing new to say
                finer = None
            if finer is not None and finer.scale > small.scale:
                image = finer.rgb if not candidate.rotation else _rotate(finer.rgb, candidate.rotation)
                scale = finer.scale
        factor = scale / small.scale
        coarse = face.landmarks * factor
        fallback = _Source(image, coarse, fit_similarity(coarse, self._template), scale)
        x, y, w, h = (v * factor for v in face.box)
        cx, cy, half = x + w / 2, y + h / 2, max(w, h) * _REFINE_MARGIN
        height, width = image.shape[:2]
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return fallback
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        expected_eye = face.inter_eye_px * factor
        found = [
            f
            for f in self._detector.detect(crop, max_side=_REFINE_SIDE)
            if 0.67 * expected_eye <= f.inter_eye_px <= 1.5 * expected_eye
        ]
        if not found:
            return fallback
        nearest = min(
            found,
            key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - (cx - x0), f.box[1] + f.box[3] / 2 - (cy - y0)),
        )
        landmarks = nearest.landmarks + np.array([x0, y0], dtype=np.float64)
        fit = fit_similarity(landmarks, self._template)
        if not self._plausible(fit):
            return fallback
        return _Source(image, landmarks, fit, scale)

    def _judge(
        self,
        decoded: DecodedImage,
        candidate: _Candidate | None,
        faces_upright: list[DetectedFace],
        refine: Callable[[_Candidate], _Source] | None,
    ) -> FaceTemplate | Rejection:
        t = self._thresholds
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

        source = (
            refine(candidate)
            if refine is not None
            else _Source(candidate.image, subject.landmarks, candidate.fit, decoded.scale)
        )
        size = self._template_size()
        aligned = warp_to_template(source.image, source.fit, size)
        mapped = (source.fit.matrix[:, :2] @ source.landmarks.T).T + source.fit.matrix[:, 2]
        yaw_ratio, pitch_offset = pose_measures(mapped)
        crop = crop_measures(aligned)
        # Eye distance in the photo as submitted, not in the reduced working copy.
        eyes = source.landmarks[1] - source.landmarks[0]
        inter_eye_px = float(np.hypot(eyes[0], eyes[1])) / source.scale
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

    def _find_subject(
        self, rgb: NDArray[np.uint8], max_side: int | None = None
    ) -> tuple[_Candidate | None, list[DetectedFace]]:
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
            faces = self._detector.detect(image, max_side=max_side)
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
