"""A writable copy of the `smoke_stages` session fixture's data root, for tests that run a stage again."""

from __future__ import annotations

import shutil
from pathlib import Path

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig


def copy_run(smoke_stages, dest: Path, **updates) -> tuple[PipelineConfig, Catalog]:
    """The session run's config and catalog, on a copy of its data root; `updates` set config sections."""
    cfg, cat, _ = smoke_stages
    shutil.copytree(cat.root, dest)
    data = cfg.model_dump(mode="json")
    data["data_root"] = str(dest)
    for dotted, value in updates.items():
        section, _, key = dotted.partition("__")
        data[section][key] = value
    new = PipelineConfig.model_validate(data)
    return new, Catalog.from_config(new)
