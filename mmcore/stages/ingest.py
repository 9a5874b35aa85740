"""Ingest: a dataset in any supported format -> checked, decoded, deduplicated, split, tokenized shards.

Steps (a Prefect task each; `run` chains them in one process):

    check_source   open the source and its annotation files: a malformed or missing source fails here
    plan           the ledger of earlier runs against the source: which records need processing, in shards
    ingest_shard   one shard: decode, resize, validate, write its sample and reject shards
    finish         duplicates across shards, the tokenizer (kept when no record changed), token shards,
                   and the manifest, written last: it marks the dataset complete

Hold `lock(cat)` from plan to finish: two runs on one dataset then take turns, and the second finds the
first one's shards and keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmcore.catalog import Catalog, ProcessedDir
from mmcore.config import PipelineConfig
from mmcore.data.ingest import (
    IngestPlan,
    IngestReport,
    ShardResult,
    ShardWork,
    build_manifest,
    finish_ingest,
    fit_tokenizer,
    plan_ingest,
    process_pool,
    tokenize_shard,
)
from mmcore.data.ingest import ingest_shard as decode_shard
from mmcore.data.shards import read_tables
from mmcore.data.sources import open_source
from mmcore.data.storage import Storage
from mmcore.io import combined_digest, folder_lock
from mmcore.stages.hooks import Hooks


@dataclass(frozen=True)
class SourceInfo:
    uri: str
    format: str
    annotation_files: tuple[str, ...]


@dataclass(frozen=True)
class IngestResult:
    """What an ingest left in `processed`: every count adds up, records_in = accepted + rejected."""

    processed: ProcessedDir
    digest: str  # content digest of the shards and tokenizer
    source: dict[str, Any]  # uri, format and the annotation files' digests
    records_in: int
    accepted: int
    rejected: int
    processed_now: int  # records decoded by this run
    kept: int  # records kept from earlier runs
    dropped: int  # old rows dropped: record edited, retried or gone from the source
    splits: dict[str, int]
    rejects_by_reason: dict[str, int]
    tokenizer_kept: bool  # no record changed, so the tokenizer was not trained again
    seconds: float
    shard_writers: tuple[str, ...]  # host:pid of the processes that wrote shards this run
    repaired: tuple[str, ...] = ()  # damaged shards found, dropped and rebuilt (the warnings logged)

    @property
    def outputs(self) -> list[Path]:
        return [self.processed.manifest]

    @property
    def source_digest(self) -> str:
        """Digest of the source's annotation files (lineage)."""
        return combined_digest(sorted(self.source["files"].values()))


@contextmanager
def lock(cat: Catalog) -> Iterator[Path]:
    """Exclusive use of the dataset's output folder for one run (other runs wait)."""
    with folder_lock(cat.processed.path) as held:
        yield held


def check_source(cfg: PipelineConfig, cat: Catalog) -> SourceInfo:
    """Open the source and read its annotation file list, failing before any work when it is missing or
    malformed."""
    if cfg.ingest.source is None and not Storage(cat.raw_uri).is_dir():
        raise FileNotFoundError(f"{cat.raw_uri} does not exist: put a dataset there (data/README.md lists the "
                                "formats), fetch one with `mm data fetch easy-vqa`, generate one with `mm data synth`, "
                                "or point at one with --source")
    source = open_source(cat.source, cfg.ingest.format)
    return SourceInfo(cat.source, source.format, tuple(source.annotation_files()))


def plan(cfg: PipelineConfig, cat: Catalog, retry_rejected: bool = False) -> IngestPlan:
    """Which records are new, edited or gone since the last run, cut into shards of work; damaged shards are
    dropped (`IngestPlan.repairs`, logged by `finish`). Call under `lock`.

    With changes the manifest is removed: the dataset is incomplete until finish. Unchanged, it stays valid."""
    return plan_ingest(open_source(cat.source, cfg.ingest.format), cat.processed, cfg.ingest, retry_rejected)


def ingest_shard(plan_path: str, work: ShardWork, workers: int = 1, pool: ProcessPoolExecutor | None = None,
                 processed: ProcessedDir | None = None) -> ShardResult:
    """Decode and write one planned shard; `pool` is a decode pool of `workers` processes to share.
    `processed`: write it there instead of the planned folder (the dataset folder of a worker's own working
    copy; `plan_path` is then a copy of the plan file, with copies of the work files beside it)."""
    return decode_shard(IngestPlan.load(plan_path, processed), work, workers, pool)


def finish(cfg: PipelineConfig, cat: Catalog, plan_path: str, shards: list[ShardResult],
           hooks: Hooks | None = None) -> IngestResult:
    """Mark duplicates across shards, fit (or keep) the tokenizer, tokenize every shard, write the manifest."""
    hooks = hooks or Hooks()
    report = finish_ingest(IngestPlan.load(plan_path), shards)
    for repair in report.repairs:  # found by plan (a task without hooks): the run's log shows them here
        hooks.log(f"warning: {repair}")
    hooks.log(f"{report.records_in} records in the source: {report.processed} processed now, {report.kept} kept "
              f"from earlier runs, {report.dropped} old rows dropped; {report.accepted} accepted + "
              f"{report.rejected} rejected in {report.seconds:.1f} s")
    kept = _tokenizer_still_valid(cat, report)
    if kept:
        hooks.log(f"no record changed: keeping the tokenizer {cat.processed.tokenizer}")
    else:
        fit_tokenizer([s.samples_path for s in report.shards], cfg.ingest.vocab_size, cat.processed.tokenizer)
    for shard in report.shards:
        tokenize_shard(cat.processed, shard.index, cfg.encoder.max_text_len)
    manifest = build_manifest(cat.processed, report, {"ingest_config_digest": cfg.digest("ingest")})
    return _result(cat, report, manifest, kept)


def _tokenizer_still_valid(cat: Catalog, report: IngestReport) -> bool:
    """A run that changed nothing keeps the tokenizer of the complete dataset it found: training it again
    would give the same one. The manifest is still there only when no shard changed since it was written."""
    return (not report.processed and not report.dropped and cat.processed.tokenizer.exists()
            and cat.processed.manifest.exists())


def _result(cat: Catalog, report: IngestReport, manifest: dict[str, Any], tokenizer_kept: bool) -> IngestResult:
    return IngestResult(
        processed=cat.processed, digest=manifest["digest"], source=report.source,
        records_in=manifest["records_in"], accepted=manifest["accepted"], rejected=manifest["rejected"],
        processed_now=report.processed, kept=report.kept, dropped=report.dropped, splits=manifest["splits"],
        rejects_by_reason=manifest["rejects_by_reason"], tokenizer_kept=tokenizer_kept, seconds=report.seconds,
        shard_writers=tuple(sorted({s.writer for s in report.shards if s.writer})), repaired=tuple(report.repairs))


def run(cfg: PipelineConfig, cat: Catalog, workers: int | None = None, retry_rejected: bool = False,
        hooks: Hooks | None = None) -> IngestResult:
    """The whole stage in this process: check, plan, every shard on a pool of `workers` decoding processes
    (default: one per CPU core), finish."""
    hooks = hooks or Hooks()
    workers = workers or os.cpu_count() or 1
    check_source(cfg, cat)
    with lock(cat), ExitStack() as stack:
        planned = plan(cfg, cat, retry_rejected)
        pool = stack.enter_context(process_pool(workers)) if workers > 1 and planned.work else None
        shards = [ingest_shard(planned.path, work, workers, pool) for work in planned.work]
        return finish(cfg, cat, planned.path, shards, hooks)


def rejects(cat: Catalog) -> pa.Table:
    """Every rejected record of the dataset's last complete ingest, with where it is and why."""
    return read_tables(cat.processed.listed("rejects"))
