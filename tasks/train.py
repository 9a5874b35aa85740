"""The head-training task over `mmcore.stages.train`: cached on the features' digest, config and code."""

from __future__ import annotations

from prefect import task

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.stages import train as S
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, keyed_on


@task(cache_key_fn=keyed_on("train", lambda p: S.inputs(p["cfg"], p["cat"])), persist_result=True,
      cache_expiration=CACHE_EXPIRATION)
def train(cfg: PipelineConfig, cat: Catalog, run_id: str) -> S.TrainResult:
    """Train every head the data supports."""
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", cat.features, cat.features.digest(), "train")
    result = S.run(cfg, cat, tracking.RunHooks(run_id))
    tracking.log_artifact(run_id, cat.heads.heads, "checkpoints")
    tracking.log_tags(run_id, {"answers": result.answers, **{f"skipped_{k}": v for k, v in result.skipped.items()}})
    return result
