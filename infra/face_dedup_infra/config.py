"""What a registry chooses at deployment (CDK context `face-dedup:*`, see cdk.json and the
README's deploy section for each option and the production profile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face_dedup import capacity


def _whole_number(name: str, raw: Any) -> int:
    """A count from the context (JSON number or -c string), refused unless it is a plain whole
    number: `int()` would take true as 1 and 1.9 as 1, and say nothing of which option was bad."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        return int(raw.strip())
    raise capacity.CapacityError(f"face-dedup:{name} must be a whole number, not {raw!r}")


def _named_method(method: str | None, encoding: str) -> capacity.IndexMethod | None:
    """The method the context names, or None for the size's default. An encoding other than
    fp32 names HNSW even without `index-method` (only the graph has encodings), so that
    `index-encoding=fp16` (or an 8-bit one) is deployed or refused, never silently dropped."""
    if method is None and encoding == "fp32":
        return None
    return capacity.IndexMethod(method or "hnsw", encoding)


@dataclass(frozen=True)
class DeploymentConfig:
    layers_dir: Path  # built by `make layers`: runtime/ and models/ layer folders
    retention_days: int = 3650  # photos and records; registries set their legal retention
    opensearch_instance_type: str = "r7g.large.search"
    opensearch_data_nodes: int = 2
    opensearch_volume_gb: int = 100
    # Production: three dedicated masters and three AZs (see README); off for small registries.
    opensearch_dedicated_masters: int = 0
    opensearch_master_type: str = "m7g.large.search"
    opensearch_zones: int = 2
    # Concurrent index clients per data node (search and complete each, and ingest's queue), as
    # asked (`index-concurrency-per-node`); None: derived (`concurrency_per_node`).
    index_concurrency_per_node: int | None = None
    target_fpir: str = "0.01"
    model_pack: str = "yunet-sface-flip-v1"
    alarm_email: str | None = None  # officers: case digests
    operations_email: str | None = None  # operators: every alarm
    tenants: tuple[str, ...] = ("default",)  # reconciled nightly
    callback_urls: tuple[str, ...] = ()  # the console's sign-in callbacks (hosted UI)
    # Faces the index must serve (issue 15): the data nodes are sized for it by the capacity
    # planner's formulas, and a size the index method has not been measured to serve with
    # >= 99.5% duplicate recall is refused here, at synth.
    registry_size: int = 100_000
    opensearch_replicas: int = 1  # OpenSearch's default number_of_replicas (index_body keeps it)
    # The index method and encoding (`index-method`, `index-encoding`); unset: the cheapest
    # deployable method validated at registry_size (capacity.default_method): HNSW fp32 to
    # 100k faces, the exact scan above (BENCHMARKS.md "Cloud index").
    index_method: str | None = None
    index_encoding: str = "fp32"

    def __post_init__(self) -> None:
        capacity.check_deployment(
            self.registry_size,
            instance_type=self.opensearch_instance_type,
            data_nodes=self.opensearch_data_nodes,
            method=self.method,
            replicas=self.opensearch_replicas,
        )
        self.concurrency_per_node  # noqa: B018 (refuses, at synth, more than exact search allows)

    @property
    def concurrency_per_node(self) -> int:
        """What the stack reserves per data node: the asked value or the default, bounded for
        exact search so concurrent scans finish within the index client's timeout (the planner's
        formula: capacity.index_concurrency_per_node)."""
        return capacity.index_concurrency_per_node(
            self.method,
            self.registry_size,
            instance_type=self.opensearch_instance_type,
            requested=self.index_concurrency_per_node,
        )

    @property
    def method(self) -> capacity.IndexMethod:
        named = _named_method(self.index_method, self.index_encoding)
        if named is None:
            return capacity.default_method(
                self.registry_size, replicas=self.opensearch_replicas, zones=self.opensearch_zones
            )
        return named

    @property
    def index_shards(self) -> int:
        """Primary shards: an exact scan's are searched in parallel (capacity.exact_shards)."""
        method = self.method
        return capacity.exact_shards(self.registry_size) if method.name == "exact" else 1

    @classmethod
    def from_context(cls, get: Any, base: Path) -> DeploymentConfig:
        def value(name: str, default: Any) -> Any:
            found = get(f"face-dedup:{name}")
            return default if found is None else found

        def listed(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = value(name, default)
            return tuple(str(v) for v in (raw.split(",") if isinstance(raw, str) else raw) if str(v))

        registry_size = _whole_number("registry-size", value("registry-size", 100_000))
        replicas = cls.opensearch_replicas
        zones = int(value("opensearch-zones", 2))
        named = value("index-method", None)
        encoding = str(value("index-encoding", "fp32"))
        method = _named_method(None if named is None else str(named), encoding)
        # Unset node type, count or volume: what `face-dedup plan-capacity` says for this size
        # and method (none named: the default for the size; refused below if none is validated).
        planned = capacity.plan(registry_size, method=method, replicas=replicas, zones=zones)
        concurrency = value("index-concurrency-per-node", None)
        return cls(
            layers_dir=(base / str(value("layers-dir", "../build/layers"))).resolve(),
            retention_days=int(value("retention-days", 3650)),
            opensearch_instance_type=str(value("opensearch-instance-type", planned.instance.name)),
            opensearch_data_nodes=int(value("opensearch-data-nodes", planned.data_nodes)),
            opensearch_volume_gb=int(value("opensearch-volume-gb", planned.volume_gb)),
            opensearch_dedicated_masters=int(value("opensearch-dedicated-masters", 0)),
            opensearch_master_type=str(value("opensearch-master-type", "m7g.large.search")),
            opensearch_zones=zones,
            index_concurrency_per_node=(
                None if concurrency is None else _whole_number("index-concurrency-per-node", concurrency)
            ),
            target_fpir=str(value("target-fpir", "0.01")),
            model_pack=str(value("model-pack", "yunet-sface-flip-v1")),
            alarm_email=value("alarm-email", None),
            operations_email=value("operations-email", None),
            tenants=listed("tenants", ("default",)),
            callback_urls=listed("callback-urls", ()),
            registry_size=registry_size,
            index_method=None if named is None else str(named),
            index_encoding=encoding,
        )
