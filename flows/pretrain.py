"""Pretrain flow: contrastive training of the image and text encoders.

Run: `mm pretrain --preset demo` or `python -m flows.pretrain`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import require, resolve
from mmcore.data.dataset import MANIFEST
from tasks import storage, tracking
from tasks.caching import cached_tags, run_stage_task, timeout_seconds
from tasks.pretraining import pretrain_encoder


@flow(name="pretrain")
def pretrain_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                  parent_run_id: str | None = None, refresh: bool = False) -> str:
    """Align the encoders in one embedding space; returns the encoder checkpoint path.

    The result is cached on the dataset, config and code digests; `refresh` retrains from scratch.
    """
    cfg, cat = resolve(preset, dataset, overrides)
    storage.pull(cat, cat.processed, cat.pretrain)  # a checkpoint in the store is resumed
    require(cat.processed / MANIFEST, "ingest")
    with tracking.stage_run(cfg, "pretrain", parent_run_id) as run_id:
        path, cached = run_stage_task(pretrain_encoder, str(cat.processed), cfg, str(cat.pretrain), run_id,
                                      fresh=refresh, refresh=refresh, files=lambda path: [path],
                                      timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        storage.push(cat, cat.pretrain)
        return path


if __name__ == "__main__":
    pretrain_flow()
