"""Ingest tasks over `mmcore.stages.ingest`: check the source, plan, one task per shard (so a Dask or Ray
task runner spreads the shards over its workers), finish. With an object-store data_root the plan goes
through the store (`share`), each shard task pulls its work and pushes its shard, and the flow pulls the
shards back (`collect`) for finish: workers share no filesystem with the flow or each other."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.data.ingest import IngestPlan, ShardResult, ShardWork, process_pool
from mmcore.data.shards import read_tables
from mmcore.io import read_json
from mmcore.stages import ingest as S
from tasks import storage, tracking

_POOLS: dict[str, ProcessPoolExecutor] = {}  # decode pools shared by the shard tasks of one flow run (threads)


@contextmanager
def decode_pool(workers: int, task_runner: str) -> Iterator[str | None]:
    """Under the threads runner, one pool of `workers` decoding processes that all shard tasks share (found
    by the key this yields). Other runners get None: each shard decodes in its worker's own process,
    because the cluster already is the parallelism."""
    if task_runner != "threads" or workers <= 1:
        yield None
        return
    key = uuid.uuid4().hex
    with process_pool(workers) as pool:
        _POOLS[key] = pool
        try:
            yield key
        finally:
            del _POOLS[key]


@task
def check_source(cfg: PipelineConfig, cat: Catalog) -> S.SourceInfo:
    """Open the source and its annotation files, failing before any work when they are missing or malformed."""
    info = S.check_source(cfg, cat)
    files = info.annotation_files
    get_run_logger().info("source %s: format %s, %d annotation file(s): %s", info.uri, info.format, len(files),
                          ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
    return info


@task
def plan(cfg: PipelineConfig, cat: Catalog, retry_rejected: bool = False) -> IngestPlan:
    """Find the new, edited and removed records and cut the new ones into shards of work."""
    planned = S.plan(cfg, cat, retry_rejected)
    get_run_logger().info("%d records in the source: %d kept from earlier runs, %d to process in %d shard(s)",
                          planned.records_in, planned.kept, sum(w.records for w in planned.work), len(planned.work))
    return planned


def share(cat: Catalog, planned: IngestPlan) -> None:
    """With an object-store data_root, before the shard tasks: the plan's staging files go to the store, for
    shard tasks wherever they run (killed runs' staging files there go first, as `plan` removed them here);
    the store's manifest goes when `plan` removed the working copy's, since the shards are about to change."""
    storage.remove(cat, cat.processed.staging)
    storage.push(cat, Path(planned.stage), only=planned.shared_files)
    if not cat.processed.manifest.exists():
        storage.remove(cat, cat.processed, only=[cat.processed.manifest.name])


@task(retries=2, retry_delay_seconds=[1, 5])
def ingest_shard(plan_path: str, work: ShardWork, workers: int, pool: str | None,
                 cfg: PipelineConfig | None = None, cat: Catalog | None = None) -> ShardResult:
    """Check, decode, resize and write one shard; `pool` names a shared decode pool (threads runner).

    Given the flow's `cfg` and `cat` and an object-store data_root, the task reads its part of the plan from the
    store, writes the shard in the working copy of its own process and pushes it to the store itself."""
    workers, shared = (workers, _POOLS.get(pool)) if pool else (1, None)
    if cfg is None or cat is None or cat.remote_root is None:
        shard = S.ingest_shard(plan_path, work, workers, shared)
    else:
        shard = _through_store(cfg, cat, plan_path, work, workers, shared)
    get_run_logger().info("shard %s: %d accepted, %d rejected (written by %s)", shard.name, shard.accepted,
                          shard.rejected, shard.writer)
    return shard


def _through_store(cfg: PipelineConfig, cat: Catalog, plan_path: str, work: ShardWork, workers: int,
                   pool: ProcessPoolExecutor | None) -> ShardResult:
    """One shard written in this process's own working copy from its plan and work file, pulled from the store
    into scratch space; pushed back: the image list for finish, then the rejects, then the samples (the shard's
    mark). Returns it with the paths where the flow finds it once it pulls (`collect`)."""
    mine, stage = storage.own_copy(cfg, cat), Path(plan_path).parent
    with tempfile.TemporaryDirectory(prefix="mm-ingest-plan-") as scratch:  # the plan's files, for this task only
        storage.fetch(cat, stage, [Path(plan_path).name, Path(work.path).name], into=Path(scratch))
        here = str(Path(scratch) / Path(plan_path).name)
        shard = S.ingest_shard(here, work, workers, pool, mine.processed)
        storage.deliver(cat, stage, [IngestPlan.load(here).images_file(work.index).name], source=Path(scratch))
    storage.deliver(mine, mine.processed, [Path(shard.rejects_path).name, Path(shard.samples_path).name])
    return ShardResult.of(cat.processed, shard.index, shard.accepted, shard.rejected, shard.new, shard.writer)


def collect(cat: Catalog, planned: IngestPlan, shards: list[ShardResult]) -> None:
    """With an object-store data_root, after the shard tasks: what they pushed (their shards, and the image
    lists finish reads) comes down into the flow's working copy."""
    storage.pull(cat, cat.processed, only=[Path(p).name for s in shards for p in (s.rejects_path, s.samples_path)])
    storage.pull(cat, Path(planned.stage), only=[planned.images_file(s.index).name for s in shards])


@task
def finish(cfg: PipelineConfig, cat: Catalog, plan_path: str, shards: list[ShardResult],
           run_id: str) -> S.IngestResult:
    """Duplicates across shards, tokenizer, token shards and manifest; log counts, rejects and lineage."""
    result = S.finish(cfg, cat, plan_path, shards, tracking.RunHooks(run_id))
    _log(run_id, cfg, cat, result)
    return result


def _log(run_id: str, cfg: PipelineConfig, cat: Catalog, r: S.IngestResult) -> None:
    tracking.log_metrics(run_id, {"records_in": r.records_in, "accepted": r.accepted, "rejected": r.rejected,
                                  "processed": r.processed_now, "kept": r.kept, "dropped": r.dropped,
                                  "records_per_second": r.processed_now / max(r.seconds, 1e-9),
                                  "shard_writers": len(r.shard_writers),  # processes that wrote shards this run
                                  **{f"split_{k}": v for k, v in r.splits.items()},
                                  **{f"rejected_{k}": v for k, v in r.rejects_by_reason.items()}})
    tracking.log_tags(run_id, {"dataset_digest": r.digest, "processed_dir": str(r.processed),
                               "source_format": r.source["format"], "source_uri": r.source["uri"],
                               "task_runner": cfg.orchestration.task_runner,
                               "shard_writer_hosts": ",".join(r.shard_writers)})
    tracking.log_dataset(run_id, f"{Path(r.source['uri']).name}-{r.source['format']}", r.source["uri"], r.source_digest,
                         "source")
    tracking.log_dict(run_id, read_json(cat.processed.manifest), cat.processed.manifest.name)
    tracking.log_artifact(run_id, cat.processed.tokenizer, "tokenizer")
    if r.rejected:
        rejects = read_tables(cat.processed.listed("rejects"))
        tracking.log_table(run_id, rejects.drop_columns(["record_digest"]), "rejects.parquet")
    create_table_artifact(
        key="ingest-rejects",
        table=[{"reason": k, "records": v} for k, v in r.rejects_by_reason.items()] or [{"reason": "(none)",
                                                                                         "records": 0}],
        description=f"{r.records_in} records in: {r.accepted} accepted, {r.rejected} rejected ({r.processed_now} "
                    f"processed by this run, {r.kept} kept from earlier runs)")
