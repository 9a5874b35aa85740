"""Ingest: source records -> checked, decoded, resized, deduplicated Parquet shards.

The source is streamed once, in its own record order. Records go to a process pool in small batches
(a bounded window, so memory depends on the shard size, not the dataset size) and come back in order;
every `shard_size` records make one shard pair:

    samples-00000.parquet   accepted records (written last: its presence marks the shard complete)
    rejects-00000.parquet   rejected records with a reason code, a message and where to find them

Every record ends in exactly one of the two. Exact duplicates (same image bytes, or a repeated record
key) are rejected as `duplicate` pointing at the record that was kept; the first one in source order
wins.

Earlier runs are a ledger: a record whose key and content digest are already in a complete shard is
kept as it is. So a killed run resumes where it stopped, with byte-identical shards, and a source that
grew is ingested incrementally into new shards. A record that was edited, retried (`retry_rejected`)
or removed from the source is dropped from its old shard, so the live shards always hold each current
record exactly once: records in = accepted + rejected.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.images import load_image
from mmcore.data.shards import REJECTS, SAMPLES, read_metadata, write_table
from mmcore.data.sources.base import Source
from mmcore.data.storage import OutsideRoot, Storage

SPLITS = ("train", "val", "test")
SHARD_RE = re.compile(r"^samples-(\d{5,})\.parquet$")
BATCH = 16  # records per process-pool task: amortises pickling without hurting load balance
ENV_PREFIXES = ("AWS_",)  # object-store settings the workers' Storage reads from the environment


@dataclass(frozen=True)
class ShardResult:
    index: int
    samples_path: str
    rejects_path: str
    accepted: int
    rejected: int
    new: bool  # written (or rewritten) by this run; False: kept from an earlier run as it was

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


def shard_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    return out_dir / f"samples-{index:05d}.parquet", out_dir / f"rejects-{index:05d}.parquet"


def assign_split(sha256: str, shares: tuple[float, float, float], given: str | None = None) -> str:
    """Deterministic split from a content digest: the same image always lands in the same split.

    A split given by the source is kept, except that its "train" is cut into train and val in the
    configured proportion (sources rarely ship a validation split).
    """
    u = int(sha256[:15], 16) / 16**15  # uniform in [0, 1)
    if given in ("val", "test"):
        return given
    if given == "train":
        train_share = shares[0] / max(shares[0] + shares[1], 1e-12)
        return "train" if u < train_share else "val"
    if u < shares[0]:
        return "train"
    return "val" if u < shares[0] + shares[1] else "test"


def key64(text: str) -> int:
    """A 64-bit fingerprint: the ledger keeps these instead of strings to stay small."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# --- one record -------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _storage(uri: str) -> Storage:
    return Storage(uri)


def _reject(rec: R.SourceRecord, record_key: str, digest: str, problem: R.Problem) -> dict:
    return {"record": rec.number, "sample_id": rec.key, "record_key": record_key, "record_digest": digest,
            "where": rec.where, "image_path": rec.image, "reason": problem.reason, "message": problem.message,
            "duplicate_of": None}


def _as_duplicate(row: dict, kept: str) -> dict:
    return {"record": row["record"], "sample_id": row["sample_id"], "record_key": row["record_key"],
            "record_digest": row["record_digest"], "where": row["where"], "image_path": row["image_path"],
            "reason": R.DUPLICATE, "message": f"same image bytes as sample {kept!r}, which was kept",
            "duplicate_of": kept}


def process_record(uri: str, cfg: IngestConfig, rec: R.SourceRecord, record_key: str,
                   problem: R.Problem | None = None) -> dict:
    """One record -> an accepted row (has "image") or a rejection row (has "reason")."""
    digest = rec.digest()
    problem = problem or rec.problem
    if problem is None:
        problem = R.check_text(rec.annotation, cfg.max_text_chars)
    if problem is not None:
        return _reject(rec, record_key, digest, problem)
    ann = rec.annotation
    data = rec.image_bytes
    if data is None:
        try:
            data = _storage(uri).read_bytes(ann.image)
        except OutsideRoot as exc:
            return _reject(rec, record_key, digest, R.Problem(R.OUTSIDE_ROOT, str(exc)))
        except FileNotFoundError as exc:  # also a folder where a file should be (Storage.read_bytes)
            return _reject(rec, record_key, digest, R.Problem(R.MISSING_FILE, str(exc)))
    loaded = load_image(data, cfg)
    if isinstance(loaded, R.Problem):
        return _reject(rec, record_key, digest, loaded)
    png, width, height = loaded
    sha = hashlib.sha256(data).hexdigest()
    return {
        "sample_id": rec.key,
        "record": rec.number,
        "record_key": record_key,
        "record_digest": digest,
        "where": rec.where,  # not stored with accepted rows; needed if it turns out to be a duplicate
        "image_path": ann.image,
        "image_sha256": sha,
        "split": assign_split(sha, cfg.split, rec.split),
        "width": width,
        "height": height,
        "image": png,
        "captions": [{"lang": lang, "text": t.strip()} for lang, caps in ann.captions.items() for t in caps],
        "qa": [{"question": q.question.strip(), "answer": q.answer.strip().lower(), "type": q.type}
               for q in ann.qa],
    }


def _process_batch(uri: str, cfg: IngestConfig, items: list[tuple]) -> list[dict]:
    return [process_record(uri, cfg, *item) for item in items]


def _worker_env(env: dict[str, str]) -> None:
    """Pool initializer: the parent's object-store settings as of now (the forkserver's may be stale)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIXES)]:
        del os.environ[key]
    os.environ.update(env)


def _ordered_map(uri: str, cfg: IngestConfig, items: Iterable[tuple], workers: int) -> Iterator[dict]:
    """process_record over `items` in order; with workers > 1 a process pool with a bounded window."""
    if workers <= 1:
        for item in items:
            yield process_record(uri, cfg, *item)
        return
    ctx = multiprocessing.get_context("forkserver")  # fork is unsafe from a threaded orchestrator
    ctx.set_forkserver_preload([__name__])  # workers fork from a server that has imported this module already
    window: deque[Future] = deque()
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_env, initargs=(env,)) as pool:
        batch: list[tuple] = []
        for item in items:
            batch.append(item)
            if len(batch) == BATCH:
                window.append(pool.submit(_process_batch, uri, cfg, batch))
                batch = []
                while len(window) >= workers * 4:
                    yield from window.popleft().result()
        if batch:
            window.append(pool.submit(_process_batch, uri, cfg, batch))
        while window:
            yield from window.popleft().result()


# --- what earlier runs wrote --------------------------------------------------------------------------


@dataclass
class _Ledger:
    """Complete shards of earlier runs: which record (key, digest) lives where, and the kept images."""

    records: dict[int, tuple[int, int, bool]] = field(default_factory=dict)  # key -> (digest, shard, rejected)
    images: dict[int, str] = field(default_factory=dict)  # image sha256 prefix -> sample id kept
    shards: list[int] = field(default_factory=list)
    drop: dict[int, set[int]] = field(default_factory=dict)  # shard -> record keys to drop from it

    @classmethod
    def read(cls, out_dir: Path) -> _Ledger:
        led = cls()
        for path in sorted(out_dir.glob("*.tmp")):  # left by a killed writer
            path.unlink()
        indexes = sorted(int(m.group(1)) for p in out_dir.glob("samples-*.parquet") if (m := SHARD_RE.match(p.name)))
        for path in out_dir.glob("*-[0-9][0-9][0-9][0-9][0-9]*.parquet"):
            kind, _, number = path.stem.rpartition("-")
            # rejects without samples: an unfinished shard; tokens without samples: a shard since emptied
            if kind in ("rejects", "tokens") and number.isdigit() and int(number) not in indexes:
                path.unlink()
        led.shards = indexes
        images: dict[int, tuple[str, int, int]] = {}  # image prefix -> (sample id, record key, shard)
        for index in indexes:
            samples, rejects = shard_paths(out_dir, index)
            for path, rejected in ((samples, False), (rejects, True)):
                columns = ["record_key", "record_digest"] + ([] if rejected else ["sample_id", "image_sha256"])
                table = pq.read_table(path, columns=columns)
                for key, digest, *kept in zip(*(table[c].to_pylist() for c in columns), strict=True):
                    k = key64(key)
                    if k in led.records:  # rewritten by a later run (killed before it compacted)
                        led.drop.setdefault(led.records[k][1], set()).add(k)
                    led.records[k] = (key64(digest), index, rejected)
                    if kept:
                        images[int(kept[1][:16], 16)] = (kept[0], k, index)
        # an image counts as kept only while its row is the live version of its record
        led.images = {prefix: sid for prefix, (sid, k, index) in images.items() if led.records[k][1] == index}
        return led


def _compact(out_dir: Path, index: int, drop: set[int]) -> tuple[int, int, int]:
    """Rewrites one shard pair without the given record keys; returns (accepted, rejected, dropped)."""
    samples_path, rejects_path = shard_paths(out_dir, index)
    meta = read_metadata(samples_path)
    tables, dropped = [], 0
    for path in (rejects_path, samples_path):
        table = pq.read_table(path)
        keep = [key64(k) not in drop for k in table["record_key"].to_pylist()]
        dropped += keep.count(False)
        tables.append(table.filter(pa.array(keep, pa.bool_())))
    rejects, samples = tables
    if dropped:
        if samples.num_rows + rejects.num_rows == 0:
            samples_path.unlink()  # incomplete first, then gone
            rejects_path.unlink()
            (out_dir / f"tokens-{index:05d}.parquet").unlink(missing_ok=True)
        else:
            write_table(rejects_path, rejects.replace_schema_metadata(None))
            meta.update(accepted=samples.num_rows, rejected=rejects.num_rows,
                        records=samples.num_rows + rejects.num_rows)
            write_table(samples_path, samples.replace_schema_metadata(None), meta)
    return samples.num_rows, rejects.num_rows, dropped


# --- the run ------------------------------------------------------------------------------------------


def _write_shard(out_dir: Path, index: int, rows: list[dict], cfg: IngestConfig) -> ShardResult:
    accepted = [r for r in rows if "image" in r]
    rejected = [r for r in rows if "image" not in r]
    samples_path, rejects_path = shard_paths(out_dir, index)
    write_table(rejects_path, pa.Table.from_pylist(rejected, schema=REJECTS))
    meta = {"index": index, "records": len(rows), "accepted": len(accepted), "rejected": len(rejected),
            "ingest": cfg.model_dump(mode="json")}
    write_table(samples_path, pa.Table.from_pylist(accepted, schema=SAMPLES), meta)  # last: marks it complete
    return ShardResult(index, str(samples_path), str(rejects_path), len(accepted), len(rejected), True)


def ingest(source: Source, out_dir: str | Path, cfg: IngestConfig, workers: int = 1,
           retry_rejected: bool = False, progress: Callable[[ShardResult, IngestReport], None] | None = None
           ) -> IngestReport:
    """Ingests `source` into shards under `out_dir`, resuming or extending what earlier runs wrote.

    Args:
        workers: processes that read and decode images (1: in this process).
        retry_rejected: process records rejected by an earlier run again (e.g. after fixing files).
        progress: called after each shard is written.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = _Ledger.read(out_dir)
    report = IngestReport(source=source.describe())
    seen: dict[int, int] = {}  # record key -> its record number in this pass
    repeats: dict[int, int] = {}  # source key -> how many times it has come so far (only repeated keys)

    def pending() -> Iterator[tuple]:
        """Records that need processing, with their ledger key and a duplicate-key problem if any."""
        for rec in source.records():
            report.records_in += 1
            k = key64(rec.key)
            problem, record_key = None, rec.key
            if k in seen:
                repeats[k] = repeats.get(k, 1) + 1
                record_key = f"{rec.key}#{repeats[k]}"
                problem = R.Problem(R.DUPLICATE, f"key {rec.key!r} repeats record {seen[k]} of the source")
            rk = key64(record_key)
            seen[rk] = rec.number
            old = ledger.records.get(rk)
            if old is not None:
                if old[0] == key64(rec.digest()) and not (retry_rejected and old[2]):
                    report.kept += 1
                    continue
                ledger.drop.setdefault(old[1], set()).add(rk)  # edited or retried: the new row replaces it
            yield rec, record_key, problem

    next_index = (ledger.shards[-1] + 1) if ledger.shards else 0
    rows: list[dict] = []
    for row in _ordered_map(source.storage.uri, cfg, pending(), workers):
        if "image" in row:
            prefix = int(row["image_sha256"][:16], 16)
            kept = ledger.images.get(prefix)
            if kept is not None and kept != row["sample_id"]:  # (an edited record may keep its image)
                row = _as_duplicate(row, kept)
            else:
                ledger.images[prefix] = row["sample_id"]
        rows.append(row)
        report.processed += 1
        if len(rows) == cfg.shard_size:
            shard = _write_shard(out_dir, next_index, rows, cfg)
            report.shards.append(shard)
            if progress:
                progress(shard, report)
            next_index, rows = next_index + 1, []
    if rows:
        shard = _write_shard(out_dir, next_index, rows, cfg)
        report.shards.append(shard)
        if progress:
            progress(shard, report)

    # Records of earlier runs that are no longer in the source
    for k, (_, index, _) in ledger.records.items():
        if k not in seen:
            ledger.drop.setdefault(index, set()).add(k)
    new = {s.index for s in report.shards}
    for index in ledger.shards:
        if index in ledger.drop:
            accepted, rejected, dropped = _compact(out_dir, index, ledger.drop[index])
            report.dropped += dropped
            if accepted + rejected:
                report.shards.append(ShardResult(index, *map(str, shard_paths(out_dir, index)), accepted, rejected,
                                                 True))
        elif index not in new:
            meta = read_metadata(shard_paths(out_dir, index)[0])
            report.shards.append(ShardResult(index, *map(str, shard_paths(out_dir, index)), meta["accepted"],
                                             meta["rejected"], False))
    report.shards.sort(key=lambda s: s.index)
    report.accepted = sum(s.accepted for s in report.shards)
    report.rejected = sum(s.rejected for s in report.shards)
    report.seconds = time.perf_counter() - start
    if report.accepted + report.rejected != report.records_in:
        raise RuntimeError(f"record count mismatch in {out_dir}: {report.records_in} records in the source, "
                           f"{report.accepted} accepted + {report.rejected} rejected")
    return report
