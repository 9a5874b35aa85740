"""Train flow: the task heads on the frozen features.

Run: `mm train --preset demo` or `python -m flows.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow

from flows.common import DEFAULT
from mmcore.config import PipelineConfig

if TYPE_CHECKING:
    from mmcore.stages.train import TrainResult


@flow(name="train")
def train_flow(cfg: PipelineConfig = DEFAULT, parent_run_id: str | None = None,
               refresh: bool = False) -> TrainResult:
    """Train the heads; cached on the features, config and code digests (`refresh` trains them again)."""
    from mmcore.catalog import Catalog  # what the stage runs is imported as it starts (flows/common.py)
    from tasks import storage, tracking
    from tasks.caching import cached_tags, run_cached, timeout_seconds
    from tasks.train import train

    cat = Catalog.from_config(cfg)
    storage.pull(cat, cat.processed, cat.features)
    cat.require("extract")
    with tracking.stage_run(cfg, "train", parent_run_id) as run_id:
        result, cached = run_cached(train, cfg, cat, run_id, refresh=refresh, timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        storage.push(cat, cat.heads)
    return result


if __name__ == "__main__":
    train_flow()
