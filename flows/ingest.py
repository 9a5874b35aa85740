"""Ingest flow: a source dataset (any supported format, local or s3://) -> sample/token/reject shards + manifest.

Run: `mm ingest --preset demo`, `mm ingest --dataset easy-vqa`, `mm ingest --source s3://bucket/coco
--format coco`, `mm ingest --set orchestration.task_runner=dask`, or `python -m flows.ingest`. A rerun
resumes a killed run and ingests only new records. One task per shard: under a Dask or Ray task runner
the shards spread over the cluster's workers.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.futures import as_completed

from flows.common import resolve, stage_flow
from mmcore.data.storage import Storage
from mmcore.io import folder_lock
from mmcore.progress import Progress
from tasks import ingest as T
from tasks import storage, tracking


@flow(name="ingest")
def ingest_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                parent_run_id: str | None = None, workers: int | None = None,
                retry_rejected: bool = False) -> str:
    """Validate, decode, resize, dedupe, split and tokenize a dataset; returns the processed folder.

    Args:
        workers: processes decoding images (default: one per CPU core), shared by the shard tasks under
            the threads runner; under dask or ray each shard task decodes in its worker's process.
        retry_rejected: process records that earlier runs rejected again (e.g. after fixing their files).
    """
    cfg, cat = resolve(preset, dataset, overrides)
    out = str(cat.processed)
    if cfg.ingest.source is None and not Storage(cat.raw_uri).is_dir():
        raise FileNotFoundError(f"{cat.raw_uri} does not exist: put a dataset there (data/README.md lists the "
                                "formats), fetch one with `mm data fetch easy-vqa`, generate one with `mm data synth`, "
                                "or point at one with --source")
    # Extract: a malformed or unknown source fails here, before any work
    T.check_source(cat.source, cfg.ingest.format)
    runner, workers = cfg.orchestration.task_runner, workers or os.cpu_count() or 1
    # Two runs on one dataset take turns here: the second finds the first one's shards and keeps them.
    with folder_lock(out), tracking.stage_run(cfg, "ingest", parent_run_id) as run_id:
        storage.pull(cat, cat.processed)  # shards another machine ingested are kept, not redone
        plan = T.plan_ingest(cat.source, cfg.ingest.format, cfg.ingest, out, retry_rejected)
        with T.decode_pool(workers, runner) as pool:
            futures = T.ingest_shard.map(unmapped(plan.path), plan.work, unmapped(workers), unmapped(pool))
            _log_progress(futures, [w.records for w in plan.work])
            shards = futures.result()
        report = T.finish_ingest(plan.path, shards)
        # Transform: vocabulary from the train split, then token shards
        tokenizer = T.fit_tokenizer(report, cfg.ingest.vocab_size, out)
        T.tokenize.map(report.shards, unmapped(tokenizer), unmapped(cfg.encoder.max_text_len)).result()
        # Load: the manifest marks the dataset complete
        T.finalize(report, tokenizer, out, run_id, cfg.digest("ingest"), runner)
        storage.push(cat, cat.processed)
    return out


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
    stage_flow(ingest_flow, "demo", None, None)()  # with the demo preset's orchestration.task_runner
