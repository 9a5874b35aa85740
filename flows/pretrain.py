"""Pretrain flow: the image and text encoders aligned in one embedding space.

Run: `mm pretrain --preset demo` or `python -m flows.pretrain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow

from flows.common import DEFAULT
from mmcore.config import PipelineConfig

if TYPE_CHECKING:
    from mmcore.stages.pretrain import PretrainResult


@flow(name="pretrain")
def pretrain_flow(cfg: PipelineConfig = DEFAULT, parent_run_id: str | None = None,
                  refresh: bool = False) -> PretrainResult:
    """Train the encoders; cached on the dataset, config and code digests (`refresh` retrains from scratch)."""
    from mmcore.catalog import Catalog  # what the stage runs is imported as it starts (flows/common.py)
    from tasks import storage, tracking
    from tasks.caching import cached_tags, run_cached, timeout_seconds
    from tasks.pretrain import pretrain

    cat = Catalog.from_config(cfg)
    storage.pull(cat, cat.processed, cat.pretrain)  # a checkpoint in the store is resumed
    cat.require("ingest")
    with tracking.stage_run(cfg, "pretrain", parent_run_id) as run_id:
        result, cached = run_cached(pretrain, cfg, cat, run_id, fresh=refresh, refresh=refresh,
                                    timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        storage.push(cat, cat.pretrain)
    return result


if __name__ == "__main__":
    pretrain_flow()
