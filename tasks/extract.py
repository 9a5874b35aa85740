"""Extract tasks over `mmcore.stages.extract`: one frozen-encoder pass per sample shard (cached on the
encoder's and the shard's digests), then the features manifest. With an object-store data_root each shard
task pulls its sample shard and the encoder into the working copy of its own process and pushes its
feature shard: workers share no filesystem with the flow or each other."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import task

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.io import read_json
from mmcore.stages import extract as S
from tasks import storage, tracking
from tasks.caching import CACHE_EXPIRATION, keyed_on


def _inputs(parameters: dict[str, Any]) -> dict[str, str]:
    """The shard's input digests: as the flow read them, else from the catalog's working copy."""
    return parameters.get("inputs") or S.shard_inputs(parameters["cat"], parameters["index"])


@task(cache_key_fn=keyed_on("extract", _inputs), persist_result=True, cache_expiration=CACHE_EXPIRATION,
      retries=2, retry_delay_seconds=[1, 5])
def extract_shard(cfg: PipelineConfig, cat: Catalog, index: int, fresh: bool = False,
                  inputs: dict[str, str] | None = None) -> S.ShardFeatures:
    """Write the feature shard of sample shard `index` (`fresh`: without reading the one there). `inputs`: its
    input digests (`shard_inputs`, the cache key), read by the flow, so a worker needs no working copy to
    compute its key."""
    if cat.remote_root is None:
        return S.extract_shard(cfg, cat, index, hooks=tracking.RunHooks(), fresh=fresh)
    mine = storage.own_copy(cfg, cat)
    storage.fetch(mine, mine.pretrain, [mine.pretrain.encoder.name])  # up to date after a worker's first shard
    storage.fetch(mine, mine.processed, [mine.processed.samples(index).name, mine.processed.tokens(index).name])
    if not fresh:  # a shard in the store written from the same inputs is kept
        storage.fetch(mine, mine.features, [mine.features.shard(index).name])
    shard = S.extract_shard(cfg, mine, index, hooks=tracking.RunHooks(), fresh=fresh)
    storage.deliver(mine, mine.features, [shard.path.name])
    return replace(shard, path=cat.features.shard(index))  # where the flow finds it once it pulls


def collect(cat: Catalog, indexes: list[int]) -> None:
    """With an object-store data_root, after the shard tasks: the feature shards they pushed come down into the
    flow's working copy, for the manifest."""
    storage.pull(cat, cat.features, only=[cat.features.shard(i).name for i in indexes])


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
