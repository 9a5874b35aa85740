"""Extract tasks over `mmcore.stages.extract`: one frozen-encoder pass per sample shard (cached on the
encoder's and the shard's digests), then the features manifest."""

from __future__ import annotations

from prefect import task

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.io import read_json
from mmcore.stages import extract as S
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, keyed_on


@task(cache_key_fn=keyed_on("extract", lambda p: S.shard_inputs(p["cat"], p["index"])), persist_result=True,
      cache_expiration=CACHE_EXPIRATION)
def extract_shard(cfg: PipelineConfig, cat: Catalog, index: int, fresh: bool = False) -> S.ShardFeatures:
    """Write the feature shard of sample shard `index` (`fresh`: without reading the one there)."""
    return S.extract_shard(cfg, cat, index, hooks=tracking.RunHooks(), fresh=fresh)


@task
def finish(cfg: PipelineConfig, cat: Catalog, shards: list[S.ShardFeatures], run_id: str,
           fresh: bool = False) -> S.ExtractResult:
    """Write the features manifest (last) and log it."""
    result = S.finish(cfg, cat, shards, tracking.RunHooks(), fresh)
    tracking.log_metrics(run_id, {"feature_rows": result.rows, "feature_shards_reused": result.reused})
    tracking.log_tags(run_id, {"features_digest": result.digest, "features_dir": str(result.features),
                               "dataset_digest": result.dataset_digest})
    tracking.log_dict(run_id, read_json(cat.features.manifest), f"features_{cat.features.manifest.name}")
    tracking.log_dataset(run_id, f"{cfg.dataset}-samples", cat.processed, result.dataset_digest, "extract")
    return result
