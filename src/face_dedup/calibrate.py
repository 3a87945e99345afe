"""`face-dedup calibrate`: error rates and thresholds measured on a registry's own labelled photos.

--pairs CSV (`file1,file2,same[,fold]`, the LFW protocol): `accuracy` is the mean k-fold
accuracy (each fold's threshold chosen on the others; folds from the `fold` column, else 10
round-robin folds). --labels CSV (`file,identity`): every pair of images is scored (impostor
pairs from all different-identity pairs), `accuracy` is 1 - EER, and 1:N de-duplication is
simulated by importing the photos in CSV order. A photo that cannot be used counts against
accuracy: its pairs score as non-matches.

--group-by COLUMN (with --labels): the same photos' error rates per group of that column at the
thresholds in force (see group_report.py). --cache FILE keeps the photos' templates between
runs (biometric data: keep it where the photos are, delete it when done).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup import calibration as cal
from face_dedup.bootstrap import build_engine, calibration_path, load_tail
from face_dedup.decision import DecisionPolicy
from face_dedup.group_report import clean_groups, group_report
from face_dedup.models.custom import find_pack
from face_dedup.planner import GenuineCurve, Workload, genuine_path, in_force_thresholds, plan
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate

FARS = {"1e-2": 1e-2, "1e-3": 1e-3, "1e-4": 1e-4}
Vector = NDArray[np.float32]
UNUSABLE = -1.0  # score of a pair with a photo that yielded no template


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(
                    f"{path} needs the columns {', '.join(required)} (missing {', '.join(missing)})"
                )
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def check_labels(rows: list[dict[str, str]], path: Path) -> None:
    """Every photo once, with a person, under --root: an empty identity would make one "person"
    of all the unlabelled photos, and a photo listed twice a perfect genuine pair (both skew
    every rate); a path out of --root would read files the photos' folder does not hold."""
    blank = [i for i, r in enumerate(rows) if not r["file"] or not r["identity"]]
    if blank:
        raise ValueError(
            f"{path}: empty file or identity on {len(blank)} rows (first: data row {blank[0] + 1})"
        )
    outside = [
        i
        for i, r in enumerate(rows)
        if PurePath(r["file"]).is_absolute() or ".." in PurePath(r["file"]).parts
    ]
    if outside:
        raise ValueError(
            f"{path}: a file outside --root (absolute, or with '..') on {len(outside)} rows "
            f"(first: data row {outside[0] + 1}): name photos relative to --root"
        )
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if row["file"] in seen:
            raise ValueError(f"{path}: data row {index + 1} lists a file already listed: each photo once")
        seen.add(row["file"])


def _load_cache(cache: Path | None, pack_id: str) -> tuple[dict[str, Vector], dict[str, str]]:
    if cache is None or not cache.exists():
        return {}, {}
    try:
        with cache.open("rb") as handle, np.load(handle, allow_pickle=False) as saved:
            if str(saved["model_pack"]) != pack_id:
                raise ValueError(
                    f"--cache {cache} holds templates of {saved['model_pack']}, not of {pack_id}"
                )
            vectors = {
                str(n): v.astype(np.float32) for n, v in zip(saved["names"], saved["vectors"], strict=True)
            }
            failed = {str(n): str(r) for n, r in zip(saved["failed"], saved["reasons"], strict=True)}
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # not ours, or cut short
        raise ValueError(
            f"--cache {cache} is not a template cache ({type(exc).__name__}): delete it"
        ) from None
    return vectors, failed


def _save_cache(cache: Path, pack_id: str, vectors: dict[str, Vector], failed: dict[str, str]) -> None:
    """Templates are biometric data: the file is the owner's only (0600 whatever the umask), and
    written whole to a temporary name first, so an interrupted run leaves the old cache intact."""
    names = sorted(vectors)
    dim = len(next(iter(vectors.values()))) if vectors else 0
    fd, name = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".", suffix=".partial")  # 0600
    partial = Path(name)  # a name of its own: two runs sharing a cache do not write into one file
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                model_pack=np.array(pack_id),
                names=np.array(names, dtype=str),
                vectors=np.stack([vectors[n] for n in names]) if names else np.zeros((0, dim), np.float32),
                failed=np.array(sorted(failed), dtype=str),
                reasons=np.array([failed[n] for n in sorted(failed)], dtype=str),
            )
        partial.replace(cache)
    except BaseException:
        partial.unlink(missing_ok=True)  # no stray copy of the templates (a full disk, Ctrl-C)
        raise


def _embed_all(
    settings: Settings, root: Path, files: list[str], cache: Path | None = None
) -> tuple[dict[str, Vector], dict[str, str]]:
    pack_id = find_pack(settings.model_pack, settings.models_dir).id
    cached, cached_failures = _load_cache(cache, pack_id)
    todo = [f for f in files if f not in cached and f not in cached_failures]
    if not todo:
        wanted = set(files)
        return (
            {k: v for k, v in cached.items() if k in wanted},
            {k: v for k, v in cached_failures.items() if k in wanted},
        )
    embeddings, failures = _embed_files(settings, root, todo)
    if cache is not None:
        _save_cache(cache, pack_id, cached | embeddings, cached_failures | failures)
    wanted = set(files)
    return (
        {k: v for k, v in (cached | embeddings).items() if k in wanted},
        {k: v for k, v in (cached_failures | failures).items() if k in wanted},
    )


def _embed_files(
    settings: Settings, root: Path, files: list[str]
) -> tuple[dict[str, Vector], dict[str, str]]:
    engine = build_engine(settings, find_pack(settings.model_pack, settings.models_dir))

    def one(name: str) -> tuple[str, Vector | None, str | None]:
        path = root / name
        try:
            data = path.read_bytes()
        except OSError:
            return name, None, "UNREADABLE"
        result = engine.process(data)
        if isinstance(result, FaceTemplate):
            return name, result.embedding, None
        return name, None, result.reason.value

    embeddings: dict[str, Vector] = {}
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(settings.worker_count) as pool:
        for name, vector, reason in pool.map(one, files):
            if vector is not None:
                embeddings[name] = vector
            else:
                failures[name] = reason or "UNKNOWN"
    return embeddings, failures


def _rates(genuine: NDArray[np.floating[Any]], impostor: NDArray[np.floating[Any]]) -> dict[str, Any]:
    eer, eer_threshold = cal.equal_error_rate(genuine, impostor)
    tar: dict[str, float | None] = {}
    thresholds: dict[str, float | None] = {"eer": eer_threshold}
    for key, far in FARS.items():
        if far * len(impostor) < 1:  # too few impostor pairs to measure this rate at all
            tar[key], thresholds[f"far_{key}"] = None, None
            continue
        rate, threshold = cal.tar_at_far(genuine, impostor, far)
        tar[key], thresholds[f"far_{key}"] = rate, threshold
    return {"eer": eer, "tar_at_far": tar, "thresholds": thresholds}


def calibrate(
    settings: Settings,
    *,
    root: Path,
    pairs: Path | None = None,
    labels: Path | None = None,
    save: bool = False,
    group_by: str | None = None,
    gallery_size: int = 10_000,
    resamples: int = 1000,
    cache: Path | None = None,
) -> dict[str, Any]:
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a folder")
    pack = find_pack(settings.model_pack, settings.models_dir)
    report: dict[str, Any] = {"model_pack": pack.id, "mode": "pairs" if pairs else "labels"}
    if group_by is not None and labels is None:
        raise ValueError("--group-by needs --labels (a group per photo)")
    if gallery_size < 1 or resamples < 10:
        raise ValueError("--gallery-size must be at least 1 and --resamples at least 10")
    if pairs is not None:
        rows = read_csv(pairs, ("file1", "file2", "same"))
        files = sorted({r["file1"] for r in rows} | {r["file2"] for r in rows})
        embeddings, failures = _embed_all(settings, root, files, cache)
        scores = np.array(
            [
                float(embeddings[r["file1"]] @ embeddings[r["file2"]])
                if r["file1"] in embeddings and r["file2"] in embeddings
                else UNUSABLE
                for r in rows
            ]
        )
        same = np.array([r["same"].lower() in ("1", "true", "yes", "same") for r in rows])
        folds = [int(r["fold"]) if r.get("fold") else i % 10 for i, r in enumerate(rows)]
        accuracy, std = cal.kfold_accuracy(scores, same, folds)
        genuine, impostor = scores[same], scores[~same]
        report |= {
            "accuracy": accuracy,
            "accuracy_std": std,
            "folds": len(set(folds)),
            "pairs": len(rows),
            "pairs_with_failed_images": int(np.sum(scores == UNUSABLE)),
        }
        report |= _rates(genuine, impostor)
    else:
        assert labels is not None
        rows = read_csv(labels, ("file", "identity", *((group_by,) if group_by else ())))
        check_labels(rows, labels)
        files = [r["file"] for r in rows]
        identities = [r["identity"] for r in rows]
        groups = clean_groups([r[group_by] for r in rows], group_by) if group_by else []
        embeddings, failures = _embed_all(settings, root, sorted(set(files)), cache)
        dim = pack.contract.embedding_dim
        matrix = np.stack([embeddings.get(f, np.zeros(dim, np.float32)) for f in files]).astype(np.float32)
        usable = np.array([f in embeddings for f in files])
        if group_by:
            report["by_group"] = group_report(
                settings,
                load_tail(settings, pack),
                embeddings=matrix,
                identities=identities,
                groups=groups,
                reasons=[failures.get(f) for f in files],
                column=group_by,
                gallery_size=gallery_size,
                resamples=resamples,
            )
        genuine, impostor = cal.all_pairs_scores(matrix, identities, usable, UNUSABLE)
        rates = _rates(genuine, impostor)
        report |= {"accuracy": 1.0 - rates["eer"], "images": len(files), "identities": len(set(identities))}
        report |= rates
        report |= {"pairs": len(genuine) + len(impostor)}
        if len(impostor) >= 1000:
            tail = cal.impostor_tail_from_scores(
                impostor[impostor > UNUSABLE], pack.id, f"{labels.name}: {len(files)} images"
            )
            ok = usable

            policy = DecisionPolicy.from_settings(settings, tail)  # the service's rule, floors and all

            def review(n: int) -> float:
                return policy.thresholds(n).review

            sim = cal.simulate_dedup(
                matrix[ok], [i for i, u in zip(identities, ok, strict=True) if u], review
            )
            report["dedup"] = {
                "target_fpir": settings.target_fpir,
                "duplicates": sim.duplicates,
                "recall": _finite(sim.recall),
                "new_people": sim.new_people,
                "false_alarm_rate": _finite(sim.false_alarm_rate),
                "review_threshold_at_this_size": review(int(ok.sum())),
            }
            report["calibration_points"] = tail.points
            # What `face-dedup plan` would say from these photos' own curves, at --gallery-size
            # (1,000 applications a day, 1% duplicates, 5 minutes a case: see `plan` to vary them).
            curve = GenuineCurve.from_scores(genuine, pack.id, tail.source, "pairs")
            work = Workload(
                daily_searches=1000, duplicate_share=0.01, minutes_per_case=5, officer_hours_per_day=6
            )
            forced = in_force_thresholds(
                tail, [gallery_size], settings.target_fpir, settings.duplicate_fpir, settings.review_floor_fmr
            )
            report["operating_points"] = plan(
                tail, curve, [gallery_size], work, target_fpir=settings.target_fpir, in_force=forced
            ).as_dict()
            if save:
                target = calibration_path(settings, pack.id)
                from face_dedup.adapters.private_files import private_dir

                private_dir(target.parent)  # a new data dir is the owner's only, as bootstrap makes it
                target.write_text(tail.to_json() + "\n", encoding="utf-8")
                report["saved_calibration"] = str(target)
                # The genuine side too, for `face-dedup plan` (recall at each threshold).
                curve_path = genuine_path(settings.data_dir, pack.id)
                curve_path.write_text(curve.to_json() + "\n", encoding="utf-8")
                report["saved_genuine_curve"] = str(curve_path)
        elif save:
            raise ValueError(
                f"only {len(impostor)} impostor pairs: too few to save a calibration (need 1000)"
            )
    report["genuine_pairs"] = len(genuine)
    report["impostor_pairs"] = len(impostor)
    report["failed_images"] = len(failures)
    report["failed_reasons"] = dict(sorted(failures.items()))
    report["thresholds"]["verify"] = None
    if report["tar_at_far"].get("1e-4") is not None:
        report["thresholds"]["verify"] = report["thresholds"]["far_1e-4"]
    return report


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
