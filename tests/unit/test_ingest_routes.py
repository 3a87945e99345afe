from __future__ import annotations

import pytest

from face_dedup.ingest import execution_name, route


def test_selfie_keys_name_tenant_and_application() -> None:
    where = route("selfies/tenant-a/APP-42/selfie 27 Nov.heic")
    assert where is not None
    assert (where.channel, where.tenant, where.application_id, where.file_name) == (
        "selfie",
        "tenant-a",
        "APP-42",
        "selfie 27 Nov.heic",
    )


def test_import_keys_point_at_their_batch_manifest() -> None:
    where = route("imports/registry-north/batch 7/scan-0001.jpg")
    assert where is not None and where.channel == "import" and where.application_id is None
    assert where.manifest_key == "imports/registry-north/batch 7/manifest.csv"


@pytest.mark.parametrize(
    "key",
    [
        "imports/registry-north/batch 7/manifest.csv",
        "selfies/tenant-a/selfie.jpg",
        "other/x.jpg",
        "selfies//APP/x.jpg",
        "imports/t/b/c/d.jpg",
    ],
)
def test_everything_else_is_not_an_input(key: str) -> None:
    assert route(key) is None


def test_execution_names_fit_step_functions_rules() -> None:
    name = execution_name("imp_" + "a" * 24)
    assert len(name) <= 80 and name.replace("-", "").replace("_", "").isalnum()
