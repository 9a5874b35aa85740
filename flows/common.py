"""What every stage flow shares: resolving its config and locations from typed parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config


def resolve(preset: str, dataset: str | None, overrides: dict[str, Any] | None) -> tuple[PipelineConfig, Catalog]:
    cfg = load_config(preset, overrides, dataset=dataset)
    return cfg, Catalog.from_config(cfg)


def require(path: Path, stage: str) -> str:
    """An upstream output that must exist, with a message that names the stage producing it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the {stage} stage first (or the pipeline flow)")
    return str(path)
