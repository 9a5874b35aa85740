"""Ingest tasks: open the source, plan the shards, ingest each shard, fit the tokenizer, tokenize, write
the manifest. One task per shard, so a Dask or Ray task runner spreads the shards over its workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from mmcore.config import IngestConfig
from mmcore.data import dataset as ds
from mmcore.data import ingest as ing
from mmcore.data.ingest import IngestPlan, IngestReport, ShardResult, ShardWork
from mmcore.data.shards import read_tables
from mmcore.data.sources import open_source
from mmcore.io import combined_digest
from tasks import tracking

_POOLS: dict[str, ProcessPoolExecutor] = {}  # decode pools shared by the shard tasks of one flow run (threads)


@contextmanager
def decode_pool(workers: int, task_runner: str) -> Iterator[str | None]:
    """Under the threads runner, one pool of `workers` decoding processes that all shard tasks share
    (found by the key this yields). Other runners get None: each shard decodes in its worker's own
    process, because the cluster already is the parallelism."""
    if task_runner != "threads" or workers <= 1:
        yield None
        return
    key = uuid.uuid4().hex
    with ing.process_pool(workers) as pool:
        _POOLS[key] = pool
        try:
            yield key
        finally:
            del _POOLS[key]


@task
def check_source(uri: str, fmt: str) -> str:
    """Open the source and check its annotation files, failing before any work when they are malformed."""
    source = open_source(uri, fmt)
    files = source.annotation_files()
    get_run_logger().info("source %s: format %s, %d annotation file(s): %s", uri, source.format, len(files),
                          ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
    return source.format


@task
def plan_ingest(uri: str, fmt: str, cfg: IngestConfig, out_dir: str, retry_rejected: bool) -> IngestPlan:
    """Find the new, edited and removed records and cut the new ones into shards (records go to files)."""
    plan = ing.plan_ingest(open_source(uri, fmt), out_dir, cfg, retry_rejected)
    if plan.changes:  # the dataset is incomplete until finalize; unchanged, its manifest stays valid meanwhile
        (Path(out_dir) / ds.MANIFEST).unlink(missing_ok=True)
    get_run_logger().info("%d records in the source: %d kept from earlier runs, %d to process in %d shard(s)",
                          plan.records_in, plan.kept, sum(w.records for w in plan.work), len(plan.work))
    return plan


@task(retries=2, retry_delay_seconds=[1, 5])
def ingest_shard(plan_path: str, work: ShardWork, workers: int, pool: str | None) -> ShardResult:
    """Check, decode, resize and write one shard; `pool` names a shared decode pool (threads runner)."""
    shard = ing.ingest_shard(IngestPlan.load(plan_path), work, workers if pool else 1, _POOLS.get(pool or ""))
    get_run_logger().info("shard %s: %d accepted, %d rejected (written by %s)", shard.name, shard.accepted,
                          shard.rejected, shard.writer)
    return shard


@task
def finish_ingest(plan_path: str, shards: list[ShardResult]) -> IngestReport:
    """Mark image duplicates across shards, drop replaced rows from old shards, check the record count."""
    report = ing.finish_ingest(IngestPlan.load(plan_path), shards)
    get_run_logger().info("%d records in the source: %d processed now, %d kept from earlier runs, %d old rows "
                          "dropped; %d accepted + %d rejected in %.1f s", report.records_in, report.processed,
                          report.kept, report.dropped, report.accepted, report.rejected, report.seconds)
    return report


@task
def fit_tokenizer(report: IngestReport, vocab_size: int, out_dir: str) -> str:
    """Train the subword tokenizer on the train split's captions and questions.

    A run that changed nothing keeps the tokenizer of the complete dataset it found (the manifest is still
    there only when no shard changed since it was written), since training again would give the same one.
    """
    path = Path(out_dir) / ds.TOKENIZER
    if not report.processed and not report.dropped and path.exists() and (Path(out_dir) / ds.MANIFEST).exists():
        get_run_logger().info("no record changed: keeping the tokenizer %s", path)
        return str(path)
    shards = [s.samples_path for s in report.shards]
    return str(ds.fit_tokenizer(shards, vocab_size, path))


@task
def tokenize(shard: ShardResult, tokenizer_path: str, max_len: int) -> str:
    """Write the token shard of one sample shard."""
    return str(ds.tokenize_shard(shard.samples_path, tokenizer_path, max_len))


@task
def finalize(report: IngestReport, tokenizer_path: str, out_dir: str, run_id: str,
             config_digest: str, task_runner: str = "threads") -> dict[str, Any]:
    """Check the record count, write the manifest last, and log counts, rejects and lineage."""
    manifest = ds.build_manifest(out_dir, report, tokenizer_path, {"ingest_config_digest": config_digest})
    writers = {s.writer for s in report.shards if s.writer}
    tracking.log_metrics(run_id, {"records_in": manifest["records_in"], "accepted": manifest["accepted"],
                                  "rejected": manifest["rejected"], "processed": report.processed,
                                  "kept": report.kept, "dropped": report.dropped,
                                  "records_per_second": report.processed / max(report.seconds, 1e-9),
                                  "shard_writers": len(writers),  # processes that wrote shards this run
                                  **{f"split_{k}": v for k, v in manifest["splits"].items()},
                                  **{f"rejected_{k}": v for k, v in manifest["rejects_by_reason"].items()}})
    source = report.source
    tracking.log_tags(run_id, {"dataset_digest": manifest["digest"], "processed_dir": out_dir,
                               "source_format": source["format"], "source_uri": source["uri"],
                               "task_runner": task_runner, "shard_writer_hosts": ",".join(sorted(writers))})
    tracking.log_dataset(run_id, f"{Path(source['uri']).name}-{source['format']}", source["uri"],
                         combined_digest(sorted(source["files"].values())), "source")
    tracking.log_dict(run_id, manifest, "manifest.json")
    tracking.log_artifact(run_id, tokenizer_path, "tokenizer")
    if manifest["rejected"]:
        rejects = read_tables([s.rejects_path for s in report.shards])
        tracking.log_table(run_id, rejects.drop_columns(["record_digest"]), "rejects.parquet")
    create_table_artifact(
        key="ingest-rejects",
        table=[{"reason": k, "records": v} for k, v in manifest["rejects_by_reason"].items()] or
              [{"reason": "(none)", "records": 0}],
        description=f"{manifest['records_in']} records in: {manifest['accepted']} accepted, "
                    f"{manifest['rejected']} rejected ({report.processed} processed by this run, "
                    f"{report.kept} kept from earlier runs)",
    )
    return manifest
