"""Shadow mode in the cloud (context `face-dedup:shadow-pack`, issue 11 item 5) in the synthesized
template: the three shadow functions deployed with their derived least privilege, the workflow's
shadow step that can neither block nor change a decision, the migration job's index fill, and
the deploy-time index setup told about the shadow pack's index. cdk-nag runs on these synths too
(build_app fails on an unacknowledged finding). The handlers themselves run on moto in
tests/integration/test_cloud_migration.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from face_dedup import permissions, wiring
from face_dedup.deployment import env_name
from face_dedup.models.registry import DEFAULT_PACK_ID, PACKS
from tests.infra.test_deployability import _of, functions_by_name, problems, statements

SHADOW = next(p for p in PACKS if p != DEFAULT_PACK_ID)  # the shipped pack that is not the active one
CONCURRENCY_PER_NODE = 3


def _synth(tmp: Path, **extra: str) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from app import build_app

    for name in ("runtime", "models"):
        (tmp / "layers" / name).mkdir(parents=True, exist_ok=True)
        (tmp / "layers" / name / "README").write_text("placeholder\n")
    context = {
        "face-dedup:layers-dir": str(tmp / "layers"),
        "face-dedup:migration": "true",
        "face-dedup:index-concurrency-per-node": str(CONCURRENCY_PER_NODE),
        **{f"face-dedup:{k.replace('_', '-')}": v for k, v in extra.items()},
    }
    _, stack = build_app(str(tmp / "cdk.out"), context)
    return dict(Template.from_stack(stack).to_json())


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _synth(tmp_path_factory.mktemp("shadowed"), shadow_pack=SHADOW)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same stack (the migration job deployed) without a shadow pack declared."""
    return _synth(tmp_path_factory.mktemp("plain"))


def _asl(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A state machine's ASL, its tokens as "@@<logical id>@@"."""
    (machine,) = (
        m for k, m in _of(template, "AWS::StepFunctions::StateMachine").items() if k.startswith(prefix)
    )
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]

    def token(part: dict[str, Any]) -> str:
        return f"@@{part.get('Ref') or part.get('Fn::GetAtt', [''])[0]}@@"

    return dict(json.loads("".join(p if isinstance(p, str) else token(p) for p in parts)))


def _actions(granted: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in granted:
        actions = statement["Action"]
        found |= {actions} if isinstance(actions, str) else set(actions)
    return found - {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}


# --- 1. the functions -------------------------------------------------------------------------


def test_the_three_shadow_functions_are_deployed_only_with_a_shadow_pack(
    shadowed: dict[str, Any], plain: dict[str, Any]
) -> None:
    steps = {wiring.MIGRATE_SHADOW, wiring.MIGRATE_SHADOW_FILL, wiring.MIGRATE_REPORT}
    assert steps <= set(functions_by_name(shadowed))
    assert not steps & set(functions_by_name(plain))


@pytest.mark.parametrize("name", [wiring.MIGRATE_SHADOW, wiring.MIGRATE_SHADOW_FILL, wiring.MIGRATE_REPORT])
def test_each_shadow_function_holds_exactly_what_its_code_performs(
    shadowed: dict[str, Any], name: str
) -> None:
    _, fn = functions_by_name(shadowed)[name]
    granted = statements(shadowed, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    spec = wiring.OPTIONAL_FUNCTIONS[name]
    needs = permissions.needs(spec)
    assert _actions(granted) == {n.action for n in needs | permissions.key_needs(needs)}
    props = fn["Properties"]
    # in the VPC if and only if it reaches the index (the report reads the store only)
    assert ("VpcConfig" in props) == spec.in_vpc
    assert spec.in_vpc == (name != wiring.MIGRATE_REPORT)
    env = props["Environment"]["Variables"]
    if "shadow_pack" in spec.settings:
        assert env[env_name("shadow_pack")] == SHADOW
    assert env[env_name("model_pack")] == DEFAULT_PACK_ID  # the handler overrides it with the shadow


def test_the_shadow_step_reads_the_index_only_and_is_bounded_like_the_search(
    shadowed: dict[str, Any],
) -> None:
    _, fn = functions_by_name(shadowed)[wiring.MIGRATE_SHADOW]
    granted = statements(shadowed, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    actions = _actions(granted)
    assert not {"es:ESHttpPut", "es:ESHttpDelete", "dynamodb:DeleteItem", "s3:PutObject"} & actions
    _, search = functions_by_name(shadowed)[wiring.FUNCTIONS["search"].name]
    reserved = fn["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == search["Properties"]["ReservedConcurrentExecutions"]
    assert reserved % CONCURRENCY_PER_NODE == 0  # from the context setting, per data node


def test_the_shadowed_stack_is_deployable_and_the_report_is_an_output(shadowed: dict[str, Any]) -> None:
    # every deployability rule holds, but the decision tasks' retry rule (retried for minutes,
    # never caught): the shadow step's rule is the opposite (short, not retried, caught), below
    found = problems(shadowed)
    assert [p for p in found if not p.startswith("Shadow:")] == []
    assert found == ["Shadow: transient and Lambda service errors are not retried"]
    logical, _ = functions_by_name(shadowed)[wiring.MIGRATE_REPORT]
    assert {"Ref": logical} in [o["Value"] for o in shadowed["Outputs"].values()]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"face-dedup:shadow-pack": SHADOW}, "needs face-dedup:migration=true"),
        ({"face-dedup:migration": "true", "face-dedup:shadow-pack": "no-such-pack"}, "shipped model pack"),
    ],
)
def test_a_shadow_pack_without_the_job_or_unknown_is_refused(context: dict[str, str], message: str) -> None:
    from face_dedup_infra.constructs.migration import MigrationOptions

    with pytest.raises(ValueError, match=message):
        MigrationOptions.from_context(context.get)


def test_the_active_pack_as_its_own_shadow_is_refused_at_synth(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is the active pack"):
        _synth(tmp_path, shadow_pack=DEFAULT_PACK_ID)


# --- 2. the workflow's shadow step --------------------------------------------------------------


def test_the_shadow_step_runs_between_search_and_decision_and_decides_nothing(
    shadowed: dict[str, Any],
) -> None:
    states = _asl(shadowed, "Workflow")["States"]
    assert states["Search"]["Next"] == "Shadow"
    step = states["Shadow"]
    logical, _ = functions_by_name(shadowed)[wiring.MIGRATE_SHADOW]
    assert step["Resource"] == f"@@{logical}@@"  # the function itself, its response only
    # given the search step's decision (ids and scores) and the tenant, nothing else
    assert step["Parameters"] == {"tenant.$": "$.tenant", "decision.$": "$.search.result"}
    assert step["ResultPath"] is None  # its output is discarded: the state's input goes on unchanged
    assert step["Next"] == "Decide"
    # any failure (States.ALL) goes on to the same decision, its error discarded too
    assert step["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Decide"}]
    assert "Retry" not in step  # a failed shadow search is not tried again: no delay piled up
    assert 1 <= step["TimeoutSeconds"] <= 60  # short: an enrollment waits at most this long


def test_without_the_shadow_step_the_workflow_is_exactly_the_plain_one(
    shadowed: dict[str, Any], plain: dict[str, Any]
) -> None:
    """Remove the shadow step and rejoin search -> decide: what remains is the plain stack's
    state machine, state for state, so the decision path (choices, the enroll/case steps'
    inputs, retries, catches) is unchanged; and the plain stack has no shadow step."""
    without = _asl(plain, "Workflow")
    assert "Shadow" not in without["States"]
    assert without["States"]["Search"]["Next"] == "Decide"
    rejoined = copy.deepcopy(_asl(shadowed, "Workflow"))
    rejoined["States"]["Search"]["Next"] = rejoined["States"].pop("Shadow")["Next"]
    assert rejoined == without
    # the complete step still receives the search step's output
    for name in ("Enroll", "OpenCase"):
        assert rejoined["States"][name]["Parameters"]["Payload"]["decision.$"] == "$.search.result"


def test_the_workflow_may_invoke_the_shadow_function(shadowed: dict[str, Any]) -> None:
    (logical,) = (k for k in _of(shadowed, "AWS::StepFunctions::StateMachine") if k.startswith("Workflow"))
    role = _of(shadowed, "AWS::StepFunctions::StateMachine")[logical]["Properties"]["RoleArn"]["Fn::GetAtt"][
        0
    ]
    shadow, _ = functions_by_name(shadowed)[wiring.MIGRATE_SHADOW]
    granted = statements(shadowed, role)
    assert any(
        "lambda:InvokeFunction" in json.dumps(s["Action"]) and shadow in json.dumps(s["Resource"])
        for s in granted
    )


# --- 3. the shadow pack's index ----------------------------------------------------------------


def test_the_migration_job_fills_the_shadow_index_after_the_records_and_before_any_cutover(
    shadowed: dict[str, Any], plain: dict[str, Any]
) -> None:
    states = _asl(shadowed, "Migration")["States"]
    assert states["Records"]["Next"] == "IntoShadowPack"
    # only a run into the deployed shadow pack fills its index; any other goes on to CutOver
    assert states["IntoShadowPack"]["Choices"] == [
        {"Variable": "$.target_pack", "StringEquals": SHADOW, "Next": "FillShadowIndex"}
    ]
    assert states["IntoShadowPack"]["Default"] == "CutOver"
    fill = states["FillShadowIndex"]
    logical, _ = functions_by_name(shadowed)[wiring.MIGRATE_SHADOW_FILL]
    assert fill["Resource"] == f"@@{logical}@@"
    assert fill["Parameters"] == {"tenant.$": "$.tenant"}
    assert fill["ResultPath"] == "$.shadow_fill"  # the job's input (cutover, packs) kept
    assert fill["Next"] == "CutOver"
    assert "TransientError" in json.dumps(fill["Retry"])
    plain_states = _asl(plain, "Migration")["States"]
    assert "FillShadowIndex" not in plain_states and plain_states["Records"]["Next"] == "CutOver"


def test_the_index_setup_creates_the_shadow_index_and_maps_the_shadow_roles(
    shadowed: dict[str, Any], plain: dict[str, Any]
) -> None:
    def setup(template: dict[str, Any]) -> dict[str, Any]:
        (fn,) = (
            f
            for k, f in _of(template, "AWS::Lambda::Function").items()
            if k.startswith("SearchIndexSetup") and "Provider" not in k  # not CDK's framework function
        )
        return dict(fn["Properties"]["Environment"]["Variables"])

    assert setup(shadowed)[env_name("shadow_pack")] == SHADOW
    assert env_name("shadow_pack") not in setup(plain)
    (resource,) = (r for k, r in _of(shadowed, "AWS::CloudFormation::CustomResource").items() if "Index" in k)
    props = json.dumps(resource["Properties"])
    functions = functions_by_name(shadowed)
    for name, role in (
        (wiring.MIGRATE_SHADOW, "ReadRoleArns"),
        (wiring.MIGRATE_SHADOW_FILL, "WriteRoleArns"),
    ):
        arn = functions[name][1]["Properties"]["Role"]
        assert arn in resource["Properties"][role], name
    report_role = functions[wiring.MIGRATE_REPORT][1]["Properties"]["Role"]["Fn::GetAtt"][0]
    assert report_role not in props  # the report never reaches the index


def test_the_deploy_step_creates_the_shadow_index_and_opens_both_to_the_roles() -> None:
    from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex, provision
    from tests.infra.test_function_wiring import FakeSecurityClient

    client = FakeSecurityClient()
    active, shadow = (
        OpenSearchVectorIndex(client, "faces", 128),
        OpenSearchVectorIndex(client, "faces-x", 512),
    )
    first = provision(active, {"face_dedup_read": ["arn:shadow"]}, also=[shadow])
    assert first["created"] is True and client.created == ["faces", "faces-x"]
    provision(active, {}, also=[shadow])
    assert client.created == ["faces", "faces-x"]  # idempotent: neither created twice
    for name in ("face_dedup_read", "face_dedup_write"):
        role = next(b for _, u, b in client.requests if u.endswith(f"/roles/{name}"))
        assert all(p["index_patterns"] == ["faces", "faces-x"] for p in role["index_permissions"])
    provision(active, {})  # the migration over: the shadow index leaves the roles (it is kept)
    role = [b for _, u, b in client.requests if u.endswith("/roles/face_dedup_read")][-1]
    assert role["index_permissions"][0]["index_patterns"] == ["faces"]


def test_the_index_setup_handler_creates_the_declared_shadow_packs_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.index_setup import handler as setup

    from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex
    from face_dedup.cloud_migration import pack_index_name
    from face_dedup.models.registry import get_pack
    from tests.infra.test_function_wiring import FakeSecurityClient, _Context

    client = FakeSecurityClient()
    built: list[str] = []

    def build(settings: Any) -> OpenSearchVectorIndex:
        built.append(settings.model_pack)
        dim = get_pack(settings.model_pack).contract.embedding_dim
        return OpenSearchVectorIndex(client, pack_index_name("faces", settings.model_pack), dim)

    monkeypatch.setattr(setup, "build_search_index", build)
    monkeypatch.setenv(env_name("model_pack"), DEFAULT_PACK_ID)
    monkeypatch.setenv(env_name("shadow_pack"), SHADOW)
    event = {"RequestType": "Create", "ResourceProperties": {"ReadRoleArns": ["r"], "WriteRoleArns": ["w"]}}
    setup.handler(event, _Context())
    assert built == [SHADOW, DEFAULT_PACK_ID]  # each index built for its own pack (name, dimension)
    assert client.created == [pack_index_name("faces", DEFAULT_PACK_ID), pack_index_name("faces", SHADOW)]
    assert client.created[0] != client.created[1]
    monkeypatch.delenv(env_name("shadow_pack"))
    fresh = FakeSecurityClient()
    monkeypatch.setattr(
        setup, "build_search_index", lambda settings: OpenSearchVectorIndex(fresh, "faces", 128)
    )
    setup.handler(event, _Context())
    assert fresh.created == ["faces"]  # no shadow pack declared: the active pack's index alone
