"""A registry never runs a model pack its templates are not in.

Each pack is searched only among its own templates (ports.VectorIndex: partitioned by tenant and
pack). A process that runs another pack than the one the registry's templates are in searches
an EMPTY partition and enrolls every returning person as new: silent duplicate enrollment. So
the composition root asks the store, before any use case runs, which packs the tenant's
templates are in (`RecordStore.template_packs`: an index lookup, not a scan) and:

- templates only in the active or the shadow pack (packs.json, a migration under way): go on;
- no templates (an empty registry): the configured pack, or the default;
- templates all in one pack P, and the pack came from the default (no FACE_DEDUP_MODEL_PACK,
  no override, no packs.json): run P. A registry that never ran `face-dedup migrate` records its
  pack only in its templates, so a release that changes the default keeps every such registry
  on the pack it was built with;
- anything else (the pack set explicitly, or packs.json naming another pack, or templates in
  several packs outside a migration): refused with `TemplatesInAnotherPack`, naming the packs
  and the fix.

Adopting P does not write packs.json. The templates are the record and the check re-derives it at
every start from the index, so a copy adds nothing to the guarantee, and writing it would (a) make
every start a writer, even commands that only read and registries on read-only media; (b) race:
packs.json is rewritten whole (read, change one tenant, rename) outside the registry lock, so two
processes starting for different tenants could each drop the other's entry; (c) add a second
record that can disagree with the store (a restored backup of one without the other). `face-dedup
migrate start` writes it, with the adopted pack as the active one, when a migration begins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from face_dedup.deployment import PACKS_FILE
from face_dedup.errors import ConfigError
from face_dedup.ports import RecordStore

if TYPE_CHECKING:
    from face_dedup.settings import Settings


class TemplatesInAnotherPack(ConfigError):
    """The registry's templates are in a pack this process would not search: refused at start."""

    def __init__(self, message: str, packs: frozenset[str]) -> None:
        super().__init__(message)
        self.packs = packs


def registry_pack(settings: Settings, store: RecordStore) -> Settings:
    """`settings`, running the pack the tenant's templates are in (see the module's rules);
    TemplatesInAnotherPack where it cannot. Settings unchanged where the store cannot tell."""
    packs = store.template_packs(tenant=settings.tenant)
    if packs is None:  # no cheap answer (the cloud's DynamoDB table: README, "model packs")
        return settings
    running = {settings.model_pack, settings.shadow_pack} - {""}
    stranded = packs - running
    if not stranded:
        return settings
    if settings.model_pack_defaulted and len(packs) == 1 and not settings.shadow_pack:
        (own,) = packs
        return settings.with_overrides(model_pack=own)
    raise TemplatesInAnotherPack(_refusal(settings, store, packs), packs)


def _refusal(settings: Settings, store: RecordStore, packs: frozenset[str]) -> str:
    from face_dedup.migration import recorded_active  # packs.json, as `face-dedup migrate` wrote it

    tenant, running = settings.tenant, settings.model_pack
    if len(packs) > 1:  # only ever one outside a migration: cut-over and rollback switch all at once
        counts = ", ".join(
            f"{pack} ({store.count_templates(tenant=tenant, model_pack=pack)})" for pack in sorted(packs)
        )
        return (
            f"tenant {tenant}'s records were enrolled under several model packs ({counts}), and each "
            "pack searches only its own: people enrolled under one were never compared with the "
            f"others'. Refused (this process runs {running}): restore the registry from a backup "
            "taken before the pack was changed (no command merges packs yet)"
        )
    (own,) = packs
    where = f"tenant {tenant}'s templates are in model pack {own}"
    empty = f"a service searching {running} would find none of them and enroll everyone as new"
    if recorded_active(settings.data_dir, tenant) == running:
        return (
            f"{where}, but {settings.data_dir / PACKS_FILE} records {running} ({empty}): "
            f"restore {PACKS_FILE} from your backup"
        )
    return (
        f"{where}, not {running} ({empty}): unset FACE_DEDUP_MODEL_PACK to run {own}, or move the "
        f"registry to {running} with `face-dedup migrate start --to {running}` (run without it)"
    )


def check_deployment(store: RecordStore, tenants: list[str], *, active: str, shadow: str = "") -> None:
    """The cloud's guard, run by the deploy-time index step before it creates any index: a
    deployment whose pack is neither the active nor the shadow pack of a tenant's records is
    refused (the custom resource fails, CloudFormation rolls the deployment back). One record
    per tenant is read (`sample_template_pack`): the records table has no key on the pack. Outside
    a cut-over a tenant's records are all in one pack, so that record names it; during a cut-over
    (the migration job's switch, one record at a time) the sample may be either pack, and a
    deployment that names neither is still refused."""
    running = {active, shadow} - {""}
    for tenant in tenants:
        own = store.sample_template_pack(tenant=tenant)
        if own is not None and own not in running:
            raise TemplatesInAnotherPack(
                f"tenant {tenant}'s templates are in model pack {own}, not {active}: a deployment "
                f"searching {active} would find none of them and enroll everyone as new. Deploy "
                f"with -c face-dedup:model-pack={own}, or move the registry with the migration job "
                "first (README: migrating, in the cloud)",
                frozenset({own}),
            )
