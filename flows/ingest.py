"""Ingest flow: a dataset in any supported format -> checked, decoded, split, tokenized Parquet shards.

Run: `mm ingest --preset demo` or `python -m flows.ingest`. One task per shard, on the task runner that
`orchestration.task_runner` names: threads share one pool of decoding processes; under dask or ray each
shard decodes in its worker's process, so the shards spread over the cluster's workers. With an s3://
data_root each shard task pulls its work from the bucket and pushes its shard there: workers need no
shared filesystem.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, unmapped
from prefect.futures import as_completed

from flows.common import DEFAULT, with_task_runner
from mmcore.config import PipelineConfig
from mmcore.progress import Progress

if TYPE_CHECKING:
    from mmcore.stages.ingest import IngestResult


@flow(name="ingest")
def ingest_flow(cfg: PipelineConfig = DEFAULT, parent_run_id: str | None = None, workers: int | None = None,
                retry_rejected: bool = False) -> IngestResult:
    """Validate, decode, resize, dedupe, split and tokenize a dataset.

    Args:
        workers: processes decoding images (default: one per CPU core), shared by the shard tasks under
            the threads runner; under dask or ray each shard task decodes in its worker's process.
        retry_rejected: process records that earlier runs rejected again (e.g. after fixing their files).
    """
    from mmcore.catalog import Catalog  # what the stage runs is imported as it starts (flows/common.py)
    from mmcore.stages import ingest as S
    from tasks import ingest as T
    from tasks import storage, tracking

    cat = Catalog.from_config(cfg)
    workers = workers or os.cpu_count() or 1
    T.check_source(cfg, cat)  # a missing or malformed source fails here, before any work
    with S.lock(cat), tracking.stage_run(cfg, "ingest", parent_run_id) as run_id:
        storage.pull(cat, cat.processed)  # shards another machine ingested are kept, not redone
        plan = T.plan(cfg, cat, retry_rejected)
        T.share(cat, plan)  # a bucket: the shard tasks read the plan there and push their shards there
        with T.decode_pool(workers, cfg.orchestration.task_runner) as pool:
            futures = T.ingest_shard.map(unmapped(plan.path), plan.work, unmapped(workers), unmapped(pool),
                                         unmapped(cfg), unmapped(cat))
            _log_progress(futures, [w.records for w in plan.work])
            shards = futures.result()
        T.collect(cat, plan, shards)  # a bucket: the pushed shards come down for finish
        result = T.finish(cfg, cat, plan.path, shards, run_id)  # the manifest, last, marks it complete
        storage.push(cat, cat.processed)
        storage.remove(cat, cat.processed.staging)
    return result


def _log_progress(futures: list, records: list[int]) -> None:
    """One line per finished shard task: records done of the total, the rate and the time left."""
    logger = get_run_logger()
    progress = Progress(sum(records), "records")
    size = {id(f): n for f, n in zip(futures, records, strict=True)}
    done = 0
    for count, future in enumerate(as_completed(futures), 1):
        done += size[id(future)]
        logger.info("ingest: %d/%d shards, %s", count, len(futures), progress.update(done))


if __name__ == "__main__":
    with_task_runner(ingest_flow, DEFAULT)()  # on the demo preset's orchestration.task_runner
