"""Reads through the queries use case (queries.py): one tenant check and one role check for
every read the CLI and the review API make. The engine is faked (FakeFaceAnalyzer); the store,
index and blob store are the real embedded ones (SQLite, files): no models, no photos."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from face_dedup.blob_keys import crop_key, photo_key
from face_dedup.bootstrap import Adapters, build_service
from face_dedup.domain import Actor, Outcome, Role
from face_dedup.errors import NotFound, PermissionDenied
from face_dedup.models.custom import find_pack
from face_dedup.queries import READ_ROLES, Read, Reader, RegistryQueries, TenantReader
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, at_score, unit

OFFICER = Actor("olga", Role.OFFICER)
AUDITOR = Actor("aude", Role.AUDITOR)
ADMIN = Actor("adam", Role.ADMIN)
SUPERVISOR = Actor("sam", Role.SUPERVISOR)


def _settings(data_dir: Path, tenant: str) -> Settings:
    return Settings.load({}, data_dir=data_dir, models_dir=data_dir.parent / "no-models", tenant=tenant)


@dataclass
class Registry:
    """Tenant A has a review case (probe + candidate); tenant B one enrolled record."""

    queries: RegistryQueries
    case_id: str
    probe_id: str
    key_a: str  # tenant A's probe import item
    record_b: str
    key_b: str
    application_b: str
    pack: str


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    data = tmp_path / "registry"
    fake = FakeFaceAnalyzer(find_pack(_settings(data, "a").model_pack, data.parent / "no-models"))
    service, adapters = build_service(_settings(data, "tenant-a"), analyzer=fake)
    try:
        yield _fill(service, adapters, fake)
    finally:
        adapters.close()


def _fill(service: DedupService, adapters: Adapters, fake: FakeFaceAnalyzer) -> Registry:
    base = unit(fake.dim, 0)
    assert service.enroll(fake.face(b"base", base), InputRef("base.jpg", "APP-1")).outcome is Outcome.ENROLLED
    t = service.thresholds(gallery_size=1)
    probe = service.enroll(
        fake.face(b"probe", at_score(base, (t.review + t.duplicate) / 2, 1)), InputRef("p.jpg", "APP-2")
    )
    assert probe.outcome is Outcome.REVIEW and probe.case_id and probe.record_id
    other = service.for_tenant("tenant-b").enroll(
        fake.face(b"b", unit(fake.dim, 5)), InputRef("b.jpg", "APP-9")
    )
    assert other.outcome is Outcome.ENROLLED and other.record_id
    return Registry(
        adapters.queries(),
        probe.case_id,
        probe.record_id,
        probe.key,
        other.record_id,
        other.key,
        "APP-9",
        service.model_pack,
    )


def test_a_tenant_reads_its_own_cases_records_images_and_audit(registry: Registry) -> None:
    reads = registry.queries.reader(AUDITOR, "tenant-a")
    assert [c.case_id for c in reads.cases()] == [registry.case_id] == [c.case_id for c in reads.all_cases()]
    case = reads.case(registry.case_id)
    probe = reads.record(case.probe_record_id)
    assert probe is not None and probe.record_id == registry.probe_id
    assert reads.image(crop_key("tenant-a", registry.probe_id)).startswith(b"\x89PNG")
    assert reads.image(photo_key("tenant-a", registry.probe_id)) == b"probe"
    assert reads.image_url(crop_key("tenant-a", registry.probe_id), 60) is None  # local files: served here
    assert reads.audit_events() and {e.tenant for e in reads.audit_events()} == {"tenant-a"}


def test_another_tenants_ids_do_not_exist_for_a_reader(registry: Registry) -> None:
    reads = registry.queries.reader(SUPERVISOR, "tenant-b")
    assert reads.cases() == [] and reads.all_cases() == []
    with pytest.raises(NotFound):
        reads.case(registry.case_id)  # a real case id of tenant A
    assert reads.record(registry.probe_id) is None
    for key in (photo_key("tenant-a", registry.probe_id), f"tenant-b/../tenant-a/{registry.probe_id}/photo"):
        with pytest.raises(NotFound):
            reads.image(key)
        with pytest.raises(NotFound):
            reads.image_url(key, 60)
    # the same ids, read in their own tenant, are there: the refusals above are the tenant rule
    assert registry.queries.reader(SUPERVISOR, "tenant-a").record(registry.probe_id) is not None
    applicant_b = registry.queries.reader(Reader.APPLICANT, "tenant-b")
    assert applicant_b.import_item(registry.key_a) is None
    assert applicant_b.import_item(registry.key_b) is not None
    assert registry.queries.reader(Reader.APPLICANT, "tenant-a").import_item(registry.key_b) is None
    assert [r.record_id for r in applicant_b.application_records(registry.application_b, registry.pack)] == [
        registry.record_b
    ]
    assert (
        registry.queries.reader(Reader.APPLICANT, "tenant-a").application_records(
            registry.application_b, registry.pack
        )
        == []
    )
    assert {e.tenant for e in registry.queries.reader(AUDITOR, "tenant-b").audit_events()} == {"tenant-b"}


def test_several_records_at_once_keep_the_tenant_rule(registry: Registry) -> None:
    ids = [registry.probe_id, registry.record_b, "no-such-record"]
    assert list(registry.queries.reader(AUDITOR, "tenant-a").records(ids)) == [registry.probe_id]
    assert list(registry.queries.reader(AUDITOR, "tenant-b").records(ids)) == [registry.record_b]
    with pytest.raises(PermissionDenied):
        registry.queries.reader(ADMIN, "tenant-a").records(ids)


def test_the_officers_outcomes_report_reads_through_a_reader(registry: Registry) -> None:
    """`face-dedup report cases`: the same tenant and role rules as every other read."""
    from face_dedup.group_report import case_groups_report

    labels = {"APP-1": "F", "APP-2": "M", "APP-9": "F"}
    with pytest.raises(ValueError, match=r"cases of 1 labelled group\(s\) only \(0 cases unlabelled\)"):
        case_groups_report(registry.queries.reader(AUDITOR, "tenant-a"), labels, "sex", resamples=10)
    with pytest.raises(ValueError, match=r"cases of 0 labelled group\(s\) only"):
        case_groups_report(registry.queries.reader(AUDITOR, "tenant-b"), labels, "sex", resamples=10)
    with pytest.raises(PermissionDenied):
        case_groups_report(registry.queries.reader(ADMIN, "tenant-a"), labels, "sex", resamples=10)


@pytest.mark.parametrize("tenant", ["../tenant-a", "tenant-a/x", "", "a" * 64])
def test_a_tenant_name_from_outside_is_validated(registry: Registry, tenant: str) -> None:
    with pytest.raises(ValueError):
        registry.queries.reader(AUDITOR, tenant)


def _read(reads: TenantReader, registry: Registry, what: Read) -> object:
    if what is Read.CASES:
        return reads.case(registry.case_id)
    if what is Read.IMAGES:
        return reads.image(crop_key("tenant-a", registry.probe_id))
    if what is Read.AUDIT:
        return reads.audit_events()
    return reads.import_item(registry.key_a)


@pytest.mark.parametrize("what", list(Read))
@pytest.mark.parametrize("role", list(Role))
def test_each_kind_of_read_is_refused_to_the_roles_not_allowed_it(
    registry: Registry, what: Read, role: Role
) -> None:
    reads = registry.queries.reader(Actor("someone", role), "tenant-a")
    if role in READ_ROLES[what]:
        assert _read(reads, registry, what)
    else:
        with pytest.raises(PermissionDenied, match=role.value):
            _read(reads, registry, what)


def test_the_roles_are_the_reviewers_and_auditors() -> None:
    # The rule itself, spelled out: administrators see no faces and no cases; nobody with a
    # staff role reads an applicant's outcome by its key (that is the capture link's read).
    assert (
        set(READ_ROLES[Read.CASES])
        == set(READ_ROLES[Read.IMAGES])
        == {
            Role.OFFICER,
            Role.SUPERVISOR,
            Role.AUDITOR,
        }
    )
    assert set(READ_ROLES[Read.AUDIT]) == {Role.AUDITOR, Role.ADMIN}
    assert READ_ROLES[Read.APPLICANT] == ()


def test_an_applicant_reads_only_its_outcome_and_the_operator_reads_everything(registry: Registry) -> None:
    applicant = registry.queries.reader(Reader.APPLICANT, "tenant-a")
    for what in (Read.CASES, Read.IMAGES, Read.AUDIT):
        with pytest.raises(PermissionDenied, match="applicant"):
            _read(applicant, registry, what)
    operator = registry.queries.reader(Reader.OPERATOR, "tenant-a")
    assert all(_read(operator, registry, what) for what in Read)


def test_the_cli_and_the_api_read_only_through_the_queries() -> None:
    root = Path(__file__).resolve().parents[2]
    sources = [
        root / "src" / "face_dedup" / "cli.py",
        root / "src" / "face_dedup" / "group_report.py",  # `report cases`
        *sorted((root / "src" / "face_dedup_api").glob("*.py")),
    ]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert ".store." not in text and ".blobs." not in text, path.name


def test_the_api_function_reads_through_the_queries_its_bootstrap_built(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """functions/api/handler.py at cold start: the service, the uploads and the queries all come
    from `bootstrap.build_function(settings, "api")`; a request then reads through those."""
    import json
    from typing import Any, cast

    from functions.api import handler

    from face_dedup.adapters.local_blobs import LocalBlobStore
    from face_dedup.bootstrap import FunctionParts
    from face_dedup_api.app import app
    from face_dedup_api.local_server import LocalContext, to_event

    data = tmp_path / "registry"
    fake = FakeFaceAnalyzer(find_pack(_settings(data, "tenant-a").model_pack, data.parent / "no-models"))
    service, adapters = build_service(_settings(data, "tenant-a"), analyzer=fake, reconcile=False)
    built: list[str] = []
    spy = RegistryQueries(adapters.store, adapters.blobs)
    reads: list[str] = []
    real_reader = spy.reader

    def reader(who: Actor | Reader, tenant: str) -> TenantReader:
        reads.append(tenant)
        return real_reader(who, tenant)

    monkeypatch.setattr(spy, "reader", reader)

    def build_function(settings: Settings, name: str) -> FunctionParts:
        built.append(name)
        unused = cast(Any, None)  # the review API starts no workflow and notifies nobody
        return FunctionParts(service, LocalBlobStore(tmp_path / "uploads"), unused, unused, unused, spy)

    monkeypatch.setattr(handler, "build_function", build_function)
    handler._configured.cache_clear()
    try:
        handler._configured()

        def get(path: str, role: str, tenant: str) -> int:
            who = {"cognito:username": "u", "cognito:groups": role, "custom:tenant": tenant}
            response = app.resolve(to_event("GET", path, {}, b"", who), LocalContext())  # type: ignore[arg-type]
            return int(response["statusCode"])

        assert built == ["api"]
        assert get("/cases", "officer", "tenant-a") == 200
        assert get(f"/cases/{registry.case_id}", "auditor", "tenant-a") == 200
        assert get(f"/cases/{registry.case_id}", "supervisor", "tenant-b") == 404
        assert get("/cases", "admin", "tenant-a") == 403
        assert reads and set(reads) == {"tenant-a", "tenant-b"}  # every read went through `spy`
        body = app.resolve(
            to_event(
                "GET",
                "/cases",
                {},
                b"",
                {"cognito:username": "u", "cognito:groups": "officer", "custom:tenant": "tenant-a"},
            ),
            LocalContext(),  # type: ignore[arg-type]
        )["body"]
        assert [c["case_id"] for c in json.loads(body)["cases"]] == [registry.case_id]
    finally:
        handler._configured.cache_clear()
        adapters.close()
