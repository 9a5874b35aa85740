"""Extract flow: the frozen encoders write one feature shard per sample shard.

Run: `mm extract --preset demo` or `python -m flows.extract`; one task per shard, on the task runner that
`orchestration.task_runner` names (`--set orchestration.task_runner=dask`: a Dask cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from flows.common import require, resolve, stage_flow
from mmcore.data.dataset import read_manifest
from mmcore.training.contrastive import ENCODER_FILE
from tasks import features as T
from tasks import storage, tracking
from tasks.caching import cached_tags


@flow(name="extract")
def extract_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                 parent_run_id: str | None = None, refresh: bool = False) -> str:
    """Embed every image and caption with the frozen encoders; returns the features folder.

    Each shard is cached on the encoder's and the shard's digests; `refresh` extracts them all again.
    """
    cfg, cat = resolve(preset, dataset, overrides)
    storage.pull(cat, cat.processed, cat.features)  # feature shards in the store are kept
    storage.pull(cat, cat.pretrain, only=[ENCODER_FILE])
    encoder = require(cat.pretrain / ENCODER_FILE, "pretrain")
    shards = read_manifest(cat.processed)["shards"]
    samples = [str(cat.processed / s["samples"]) for s in shards]
    tokens = [str(cat.processed / s["tokens"]) for s in shards]
    out = str(cat.features)
    with tracking.stage_run(cfg, "extract", parent_run_id) as run_id:
        futures = T.extract_shard.with_options(refresh_cache=refresh).map(
            unmapped(encoder), samples, tokens, unmapped(out), unmapped(cfg.pretrain.device))
        results, cached = futures.result(), [f.state.name == "Cached" for f in futures]
        for i, result in enumerate(results):
            if cached[i] and not (Path(out) / result["path"]).exists():  # a cached shard deleted since
                results[i] = T.extract_shard.with_options(refresh_cache=True)(encoder, samples[i], tokens[i], out,
                                                                              cfg.pretrain.device)
                cached[i] = False
        tracking.log_tags(run_id, cached_tags(cached))
        T.finalize(out, results, encoder, str(cat.processed), run_id)
        storage.push(cat, cat.features)
    return out


if __name__ == "__main__":
    stage_flow(extract_flow, "demo", None, None)()  # with the demo preset's orchestration.task_runner
