"""Train flow: task heads (VQA, captioning) on the frozen features.

Run: `mm train --preset demo` or `python -m flows.train`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import require, resolve
from mmcore.features import MANIFEST
from tasks import storage, tracking
from tasks.caching import cached_tags, run_stage_task, timeout_seconds
from tasks.training import train_heads


@flow(name="train")
def train_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
               parent_run_id: str | None = None, refresh: bool = False) -> str:
    """Train the heads; returns the heads checkpoint path (cached on the features, config and code
    digests; `refresh` trains them again)."""
    cfg, cat = resolve(preset, dataset, overrides)
    storage.pull(cat, cat.processed, cat.features)
    require(cat.features / MANIFEST, "extract")
    with tracking.stage_run(cfg, "train", parent_run_id) as run_id:
        path, cached = run_stage_task(train_heads, str(cat.features), str(cat.processed), cfg, str(cat.heads), run_id,
                                      refresh=refresh, files=lambda path: [path], timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        storage.push(cat, cat.heads)
        return path


if __name__ == "__main__":
    train_flow()
