"""The steps after the plan: one task per shard (ingest_shard), then finish_ingest; `ingest` runs them all."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest.decode import key64, ordered_map, process_pool
from mmcore.data.ingest.ledger import Ledger, rewrite_shard
from mmcore.data.ingest.plan import IngestPlan, ShardWork, plan_ingest
from mmcore.data.shards import REJECTS, SAMPLES, read_metadata, write_table
from mmcore.data.sources.base import Source
from mmcore.io import folder_lock, read_json, write_json


@dataclass(frozen=True)
class ShardResult:
    index: int
    samples_path: str  # strings, not a ProcessedDir: results travel between processes and machines
    rejects_path: str
    accepted: int
    rejected: int
    new: bool  # written (or rewritten) by this run; False: kept from an earlier run as it was
    writer: str = ""  # host:pid of the process that wrote it this run (shards spread over a cluster)

    @classmethod
    def of(cls, processed: ProcessedDir, index: int, accepted: int, rejected: int, new: bool, writer: str = ""
           ) -> ShardResult:
        """The result of shard `index` of `processed`."""
        return cls(index, str(processed.samples(index)), str(processed.rejects(index)), accepted, rejected, new,
                   writer)

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass
class IngestReport:
    """What one ingest run did. `records_in` counts the source's records now; the shards hold each once."""

    source: dict[str, Any]
    shards: list[ShardResult] = field(default_factory=list)
    records_in: int = 0
    processed: int = 0  # records decoded and written by this run
    kept: int = 0  # records already in complete shards from an earlier run
    dropped: int = 0  # old rows dropped: record edited, retried, or no longer in the source
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    repairs: list[str] = field(default_factory=list)  # damaged shards dropped and rebuilt (warnings)


def ingest_shard(plan: IngestPlan, work: ShardWork, workers: int = 1,
                 pool: ProcessPoolExecutor | None = None) -> ShardResult:
    """Decodes one planned shard's records and writes its shard pair (image duplicates: finish_ingest).

    Args:
        workers: processes that read and decode images (1: in this process, e.g. on a Dask worker).
        pool: a process pool of `workers` to reuse across shards (default: one for this shard).
    """
    with open(plan.work_file(work), "rb") as fh:
        items = pickle.load(fh)  # our own staging file, written by plan_ingest
    rows = list(ordered_map(plan.uri, plan.cfg, items, workers, pool))
    accepted = [r for r in rows if "image" in r]
    images = [[r["image_sha256"][:16], r["sample_id"], r["record_key"], r["where"]] for r in accepted]
    write_json(plan.images_file(work.index), images)  # for finish_ingest, before the shard
    return _write_shard(plan.processed, work.index, rows, plan.cfg)


def _write_shard(processed: ProcessedDir, index: int, rows: list[dict], cfg: IngestConfig) -> ShardResult:
    accepted = [r for r in rows if "image" in r]
    rejected = [r for r in rows if "image" not in r]
    write_table(processed.rejects(index), pa.Table.from_pylist(rejected, schema=REJECTS))
    meta = {"index": index, "records": len(rows), "accepted": len(accepted), "rejected": len(rejected),
            "ingest": cfg.model_dump(mode="json")}
    # last: marks the shard complete
    write_table(processed.samples(index), pa.Table.from_pylist(accepted, schema=SAMPLES), meta)
    return ShardResult.of(processed, index, len(accepted), len(rejected), True, f"{socket.gethostname()}:{os.getpid()}")


def finish_ingest(plan: IngestPlan, results: list[ShardResult]) -> IngestReport:
    """Marks image duplicates (the first in source order wins), drops replaced rows from old shards,
    checks records in = accepted + rejected and removes the staging folder."""
    written = sorted(r.index for r in results)
    if written != [w.index for w in plan.work]:
        raise RuntimeError(f"ingest of {plan.processed}: shards {written} were written, "
                           f"the plan has {[w.index for w in plan.work]}")
    ledger = plan.ledger()
    report = IngestReport(source=plan.source, records_in=plan.records_in, kept=plan.kept,
                          processed=sum(w.records for w in plan.work), repairs=list(plan.repairs))
    results = sorted(results, key=lambda r: r.index)
    dupes = _image_duplicates(plan, ledger, results)
    for result in results:
        if result.index in dupes:
            accepted, rejected, _ = rewrite_shard(plan.processed, result.index, set(), dupes[result.index])
            result = replace(result, accepted=accepted, rejected=rejected)
        report.shards.append(result)
    _add_old_shards(plan.processed, ledger, report)
    report.shards.sort(key=lambda s: s.index)
    report.accepted = sum(s.accepted for s in report.shards)
    report.rejected = sum(s.rejected for s in report.shards)
    _remove_stage(plan)
    report.seconds = time.time() - plan.started
    if report.accepted + report.rejected != report.records_in:
        raise RuntimeError(f"record count mismatch in {plan.processed}: {report.records_in} records in the source, "
                           f"{report.accepted} accepted + {report.rejected} rejected")
    return report


def _image_duplicates(plan: IngestPlan, ledger: Ledger, results: list[ShardResult]
                      ) -> dict[int, dict[int, tuple[str, str]]]:
    """shard -> record key -> (kept sample id, where) of the accepted rows of this run whose image an earlier
    row has (`results` in index order, so the first in source order wins); records the kept images in `ledger`."""
    dupes: dict[int, dict[int, tuple[str, str]]] = {}
    for result in results:
        for prefix, sid, record_key, where in read_json(plan.images_file(result.index)):
            kept = ledger.images.setdefault(int(prefix, 16), sid)
            if kept != sid:  # (an edited record may keep its image)
                dupes.setdefault(result.index, {})[key64(record_key)] = (kept, where)
    return dupes


def _add_old_shards(processed: ProcessedDir, ledger: Ledger, report: IngestReport) -> None:
    """Adds the shards of earlier runs to `report`: rewritten without their dropped rows (gone when none
    is left), or as they are."""
    new = {s.index for s in report.shards}
    for index in ledger.shards:
        if index in ledger.drop:
            accepted, rejected, dropped = rewrite_shard(processed, index, ledger.drop[index], {})
            report.dropped += dropped
            if accepted + rejected:
                report.shards.append(ShardResult.of(processed, index, accepted, rejected, True))
        elif index not in new:
            meta = read_metadata(processed.samples(index))
            report.shards.append(ShardResult.of(processed, index, meta["accepted"], meta["rejected"], False))


def _remove_stage(plan: IngestPlan) -> None:
    shutil.rmtree(plan.stage, ignore_errors=True)
    try:
        plan.processed.staging.rmdir()
    except OSError:  # not empty (another staging folder) or gone
        pass


def ingest(source: Source, processed: ProcessedDir, cfg: IngestConfig, workers: int = 1,
           retry_rejected: bool = False, progress: Callable[[ShardResult, IngestReport], None] | None = None
           ) -> IngestReport:
    """Ingests `source` into shards in `processed`, resuming or extending what earlier runs wrote.

    The same steps an orchestrator runs as separate tasks (plan_ingest, ingest_shard per shard,
    finish_ingest), here one after another under the folder's lock.

    Args:
        workers: processes that read and decode images (1: in this process).
        retry_rejected: process records rejected by an earlier run again (e.g. after fixing files).
        progress: called after each shard is written.
    """
    with folder_lock(processed.path), ExitStack() as stack:
        plan = plan_ingest(source, processed, cfg, retry_rejected)
        pool = stack.enter_context(process_pool(workers)) if workers > 1 and plan.work else None
        running = IngestReport(source=plan.source, records_in=plan.records_in, kept=plan.kept)
        results = []
        for work in plan.work:
            results.append(ingest_shard(plan, work, workers, pool))
            running.processed += work.records
            if progress:
                progress(results[-1], running)
        return finish_ingest(plan, results)
