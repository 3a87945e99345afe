"""What a registry chooses at deployment (CDK context `face-dedup:*`, see cdk.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DeploymentConfig:
    layers_dir: Path  # built by `make layers`: runtime/ and models/ layer folders
    retention_days: int = 3650  # photos and records; registries set their legal retention
    opensearch_instance_type: str = "r7g.large.search"
    opensearch_data_nodes: int = 2
    target_fpir: str = "0.01"
    model_pack: str = "yunet-sface-flip-v1"
    alarm_email: str | None = None

    @classmethod
    def from_context(cls, get: Any, base: Path) -> DeploymentConfig:
        def value(name: str, default: Any) -> Any:
            found = get(f"face-dedup:{name}")
            return default if found is None else found

        return cls(
            layers_dir=(base / str(value("layers-dir", "../build/layers"))).resolve(),
            retention_days=int(value("retention-days", 3650)),
            opensearch_instance_type=str(value("opensearch-instance-type", "r7g.large.search")),
            opensearch_data_nodes=int(value("opensearch-data-nodes", 2)),
            target_fpir=str(value("target-fpir", "0.01")),
            model_pack=str(value("model-pack", "yunet-sface-flip-v1")),
            alarm_email=value("alarm-email", None),
        )
