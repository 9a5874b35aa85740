"""The pretrain task over `mmcore.stages.pretrain`: cached on the dataset, config and code digests."""

from __future__ import annotations

from prefect import task

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.stages import pretrain as S
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, keyed_on


@task(cache_key_fn=keyed_on("pretrain", lambda p: S.inputs(p["cfg"], p["cat"])), persist_result=True,
      cache_expiration=CACHE_EXPIRATION)
def pretrain(cfg: PipelineConfig, cat: Catalog, run_id: str, fresh: bool = False) -> S.PretrainResult:
    """Train the image and text encoders into one embedding space; `fresh` discards an earlier run's
    checkpoint instead of resuming it."""
    tracking.log_dataset(run_id, f"{cfg.dataset}-samples", cat.processed, cat.processed.digest(), "train")
    result = S.run(cfg, cat, tracking.RunHooks(run_id), fresh)
    tracking.log_tags(run_id, {"dataset_digest": result.dataset_digest, "train_samples": result.train_samples,
                               "val_samples": result.val_samples, "pretrain_objective": result.objective,
                               "pretrain_processes": result.processes})
    tracking.log_metrics(run_id, {"resumed_from_epoch": result.resumed_from,
                                  **{f"final_{k}": v for k, v in result.final.items()}})
    tracking.log_artifact(run_id, cat.pretrain.encoder, "checkpoints")
    return result
