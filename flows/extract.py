"""Extract flow: the frozen encoders write one feature shard per sample shard.

Run: `mm extract --preset demo` or `python -m flows.extract`; one task per shard, on the task runner that
`orchestration.task_runner` names (`--set orchestration.task_runner=dask`: a Dask cluster). With an s3://
data_root each shard task pulls its sample shard and the encoder from the bucket and pushes its feature
shard there: workers need no shared filesystem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow, unmapped
from prefect.futures import wait

from flows.common import DEFAULT, with_task_runner
from mmcore.config import PipelineConfig

if TYPE_CHECKING:
    from mmcore.stages.extract import ExtractResult


@flow(name="extract")
def extract_flow(cfg: PipelineConfig = DEFAULT, parent_run_id: str | None = None,
                 refresh: bool = False) -> ExtractResult:
    """Embed every image and caption with the frozen encoders; each shard is cached on the encoder's and the
    shard's digests (`refresh` extracts them all again)."""
    from mmcore.catalog import Catalog  # what the stage runs is imported as it starts (flows/common.py)
    from mmcore.stages.extract import shard_indexes, shard_inputs
    from tasks import extract as T
    from tasks import storage, tracking
    from tasks.caching import cached_tags, map_cached

    cat = Catalog.from_config(cfg)
    storage.pull(cat, cat.processed, only=[cat.processed.manifest.name])  # the shard tasks pull their shards
    storage.pull(cat, cat.pretrain, only=[cat.pretrain.encoder.name])
    cat.require("pretrain")  # the encoder loads: a corrupt one fails here once, not in every shard task
    indexes = shard_indexes(cat)
    inputs = [shard_inputs(cat, i) for i in indexes]  # the cache keys, read here: workers may be elsewhere
    with tracking.stage_run(cfg, "extract", parent_run_id) as run_id:
        futures = T.extract_shard.with_options(refresh_cache=refresh).map(
            unmapped(cfg), unmapped(cat), indexes, fresh=unmapped(refresh), inputs=inputs)
        wait(futures)
        T.collect(cat, indexes)  # a bucket: the shards the tasks pushed (or earlier runs did) come down
        shards, cached = map_cached(  # a cached shard that is missing or corrupt is written again
            futures, lambda i: T.extract_shard.with_options(refresh_cache=True)(cfg, cat, indexes[i], fresh=True,
                                                                                inputs=inputs[i]))
        tracking.log_tags(run_id, cached_tags(cached))
        result = T.finish(cfg, cat, shards, run_id, fresh=refresh)
        storage.push(cat, cat.features)
    return result


if __name__ == "__main__":
    with_task_runner(extract_flow, DEFAULT)()  # on the demo preset's orchestration.task_runner
