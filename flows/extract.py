"""Extract flow: the frozen encoders write one feature shard per sample shard.

Run: `mm extract --preset demo` or `python -m flows.extract`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped

from flows.common import require, resolve
from mmcore.data.dataset import read_manifest
from mmcore.training.contrastive import ENCODER_FILE
from tasks import features as T
from tasks import tracking


@flow(name="extract")
def extract_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                 parent_run_id: str | None = None) -> str:
    """Embed every image and caption with the frozen encoders; returns the features folder."""
    cfg, cat = resolve(preset, dataset, overrides)
    encoder = require(cat.pretrain / ENCODER_FILE, "pretrain")
    shards = read_manifest(cat.processed)["shards"]
    samples = [str(cat.processed / s["samples"]) for s in shards]
    tokens = [str(cat.processed / s["tokens"]) for s in shards]
    out = str(cat.features)
    with tracking.stage_run(cfg, "extract", parent_run_id) as run_id:
        results = T.extract_shard.map(unmapped(encoder), samples, tokens, unmapped(out),
                                      unmapped(cfg.pretrain.device)).result()
        T.finalize(out, results, encoder, str(cat.processed), run_id)
    return out


if __name__ == "__main__":
    extract_flow()
