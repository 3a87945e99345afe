"""Every input of a folder is reported, whatever its name or kind: names that are not UTF-8,
links (out of the folder: refused unless allowed, and said so), special files, and manifest ids
that break the identifier rule (rejected with the reason, the rest of the batch goes on)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from face_dedup.adapters.private_files import private_report
from face_dedup.errors import InputRejected, Reason
from face_dedup.importer import collect_inputs, read_input, run_import
from face_dedup.service import DedupService


def _report(
    service: DedupService, folder: Path, tmp_path: Path, **options: bool
) -> dict[str, dict[str, object]]:
    manifest = tmp_path / "manifest.csv"
    inputs = collect_inputs(folder, manifest if manifest.exists() else None, **options)
    report = tmp_path / "report.jsonl"
    summary = run_import(service, inputs, report=private_report(report))
    lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert summary.total == len(lines) == len(inputs)
    return {Path(str(line["source"])).name: line for line in lines}


def test_names_links_and_special_files_are_all_reported(
    service: DedupService, faces_root: Path, tmp_path: Path
) -> None:
    photo = (faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").read_bytes()
    other = (faces_root / "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg").read_bytes()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.jpg").write_bytes(other)
    folder = tmp_path / "batch"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.jpg"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as handle:
        handle.write(photo)
    with open(os.fsencode(folder) + b"/notes-\xfe.txt", "wb") as handle:
        handle.write(b"\x00not an image")
    (folder / "out.jpg").symlink_to(outside / "private.jpg")
    (folder / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "pipe.jpg")

    lines = _report(service, folder, tmp_path)

    assert lines["caf\\xe9-\\xff.jpg"]["outcome"] == "enrolled"
    assert lines["notes-\\xfe.txt"]["outcome"] == "rejected"
    assert lines["out.jpg"]["reason"] == "LINK_OUTSIDE_FOLDER"
    assert lines["dangling.jpg"]["reason"] == "UNREADABLE"
    assert lines["linked-dir"]["reason"] == "LINK_OUTSIDE_FOLDER"
    assert lines["pipe.jpg"]["reason"] == "NOT_A_FILE"
    assert len(lines) == 6
    record = service.store.get_record(str(lines["caf\\xe9-\\xff.jpg"]["record_id"]))
    assert record is not None and record.source.endswith("caf\\xe9-\\xff.jpg")


def test_links_out_are_followed_only_when_allowed_and_the_report_says_so(
    service: DedupService, faces_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.jpg").write_bytes((faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").read_bytes())
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(outside / "a.jpg")
    lines = _report(service, folder, tmp_path, follow_links_out=True)
    assert lines["a.jpg"]["outcome"] == "enrolled"
    assert "symbolic link out of the imported folder" in str(lines["a.jpg"]["note"])


def test_a_file_swapped_for_a_link_out_after_listing_is_refused_when_read(
    service: DedupService, faces_root: Path, tmp_path: Path
) -> None:
    """The folder is listed first and read later (seconds later in a large batch): someone who
    can write there swaps a listed photo for a link to a file only the importer can read. The
    check at listing time saw a regular file; the file actually opened must be checked too."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "private.jpg"
    secret.write_bytes((faces_root / "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg").read_bytes())
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").read_bytes())
    (folder / "inside.jpg").symlink_to(folder / "a.jpg")  # a link within the folder stays fine
    inputs = collect_inputs(folder)
    assert all(spec.problem is None for spec in inputs)
    swapped = folder / "swap.tmp"
    swapped.symlink_to(secret)
    swapped.replace(folder / "a.jpg")  # atomic, as an attacker would do it

    report = tmp_path / "report.jsonl"
    run_import(service, inputs, report=private_report(report))
    lines = {
        Path(str(line["source"])).name: line
        for line in map(json.loads, report.read_text(encoding="utf-8").splitlines())
    }
    assert lines["a.jpg"]["outcome"] == "rejected"
    assert lines["a.jpg"]["reason"] == "LINK_OUTSIDE_FOLDER"
    assert "replaced by a symbolic link" in str(lines["a.jpg"]["message"])
    assert lines["inside.jpg"]["reason"] == "LINK_OUTSIDE_FOLDER"  # it now leads out too
    assert service.store.count_templates(tenant=service.tenant, model_pack=service.model_pack) == 0


def test_read_input_checks_the_opened_file_not_the_name(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x" * 10)
    (folder / "big.jpg").write_bytes(b"x" * 11)
    os.mkfifo(folder / "pipe")
    (tmp_path / "out.jpg").write_bytes(b"y")
    (folder / "out.jpg").symlink_to(tmp_path / "out.jpg")
    inside = folder.resolve()
    assert read_input(folder / "a.jpg", 10, within=inside) == b"x" * 10
    big = read_input(folder / "big.jpg", 10, within=inside)
    assert isinstance(big, InputRejected) and big.reason is Reason.TOO_LARGE
    pipe = read_input(folder / "pipe", 10, within=inside)  # opened without blocking, then refused
    assert isinstance(pipe, InputRejected) and pipe.reason is Reason.NOT_A_FILE
    out = read_input(folder / "out.jpg", 10, within=inside)
    assert isinstance(out, InputRejected) and out.reason is Reason.LINK_OUTSIDE_FOLDER
    assert read_input(folder / "out.jpg", 10) == b"y"  # no folder rule: a file named directly


def test_a_bad_application_id_rejects_that_input_only(
    service: DedupService, faces_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((faces_root / "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg").read_bytes())
    (tmp_path / "manifest.csv").write_text("file,application_id\na.jpg,../../etc\nb.jpg,APP-2\n")
    lines = _report(service, folder, tmp_path)
    assert lines["a.jpg"]["reason"] == "INVALID_APPLICATION_ID"
    assert "invalid application id '../../etc'" in str(lines["a.jpg"]["message"])
    assert lines["a.jpg"]["application_id"] is None
    assert lines["b.jpg"]["outcome"] == "enrolled"
    assert lines["b.jpg"]["application_id"] == "APP-2"


def test_a_multi_page_tiff_is_imported_from_its_first_page_and_the_report_says_so(
    service: DedupService, faces_root: Path, tmp_path: Path
) -> None:
    from PIL import Image

    face = Image.open(faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg").convert("RGB")
    folder = tmp_path / "batch"
    folder.mkdir()
    face.save(folder / "scan", "TIFF", save_all=True, append_images=[Image.new("RGB", face.size, "white")])
    lines = _report(service, folder, tmp_path)
    assert lines["scan"]["outcome"] == "enrolled"
    assert lines["scan"]["notes"] == ["multi-page TIFF: the first of its 2 pages was used"]
