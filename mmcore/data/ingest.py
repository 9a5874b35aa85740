"""Ingest: source records -> checked, decoded, resized, deduplicated Parquet shards.

Three steps, so an orchestrator can spread the shards over processes or machines:

    plan_ingest     reads the ledger (below), streams the source once and cuts the records that need
                    processing into shards of `shard_size`, each in a staging file beside the output
    ingest_shard    one shard: decodes its records (optionally with a process pool) and writes
                        samples-00000.parquet   accepted records (written last: marks the shard complete)
                        rejects-00000.parquet   rejected records with a reason code, a message and where
    finish_ingest   marks image duplicates across shards, drops replaced rows from old shards, checks counts

`ingest()` runs the three in order. Every record ends in exactly one of the two files. Exact duplicates
(same image bytes, or a repeated record key) are rejected as `duplicate` pointing at the record that was
kept; the first one in source order wins, whatever order the shards were written in.

Earlier runs are a ledger: a record whose key and content digest are already in a complete shard is
kept as it is. So a killed run resumes where it stopped, with byte-identical shards, and a source that
grew is ingested incrementally into new shards. A record that was edited, retried (`retry_rejected`)
or removed from the source is dropped from its old shard, so the live shards always hold each current
record exactly once: records in = accepted + rejected. A run holds `folder_lock(out_dir)` from plan to
finish, so two runs on one dataset take turns instead of removing each other's files.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import re
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
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
from mmcore.io import folder_lock, read_json, write_json

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
    writer: str = ""  # host:pid of the process that wrote it this run (shards spread over a cluster)

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


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` image-decoding processes (started on first use) that shards can share."""
    ctx = multiprocessing.get_context("forkserver")  # fork is unsafe from a threaded orchestrator
    ctx.set_forkserver_preload([__name__])  # workers fork from a server that has imported this module already
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_env, initargs=(env,))


def _ordered_map(uri: str, cfg: IngestConfig, items: Iterable[tuple], workers: int,
                 pool: ProcessPoolExecutor | None = None) -> Iterator[dict]:
    """process_record over `items` in order; with workers > 1 a process pool (`pool`, else a new one)
    with a bounded window."""
    if workers <= 1:
        for item in items:
            yield process_record(uri, cfg, *item)
        return
    if pool is None:
        with process_pool(workers) as own:
            yield from _ordered_map(uri, cfg, items, workers, own)
        return
    window: deque[Future] = deque()
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
    redo: set[int] = field(default_factory=set)  # live rows whose image an earlier live row has (see read)

    @classmethod
    def read(cls, out_dir: Path) -> _Ledger:
        led = cls()
        for path in sorted(out_dir.glob("*.tmp")):  # left by a killed writer (writers hold the folder lock)
            path.unlink()
        indexes = sorted(int(m.group(1)) for p in out_dir.glob("samples-*.parquet") if (m := SHARD_RE.match(p.name)))
        for path in out_dir.glob("*-[0-9][0-9][0-9][0-9][0-9]*.parquet"):
            kind, _, number = path.stem.rpartition("-")
            # rejects without samples: an unfinished shard; tokens without samples: a shard since emptied
            if kind in ("rejects", "tokens") and number.isdigit() and int(number) not in indexes:
                path.unlink()
        led.shards = indexes
        images: list[tuple[int, str, int, int]] = []  # (image prefix, sample id, record key, shard), in order
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
                        images.append((int(kept[1][:16], 16), kept[0], k, index))
        # An image counts as kept only while its row is the live version of its record. The first live row
        # of an image wins; a later live row with the same image (a run killed after writing shards in
        # parallel, before finish_ingest marked duplicates) is processed again, and so becomes a duplicate.
        for prefix, sid, k, index in images:
            if led.records[k][1] != index:
                continue
            if led.images.setdefault(prefix, sid) != sid:
                led.redo.add(k)
        return led


def _rewrite(out_dir: Path, index: int, drop: set[int], dupes: dict[int, tuple[str, str]]
             ) -> tuple[int, int, int]:
    """Rewrites one shard pair without the `drop` record keys and with the `dupes` rows (record key ->
    (kept sample id, where)) moved from samples to rejects as duplicates; returns (accepted, rejected, dropped).
    """
    samples_path, rejects_path = shard_paths(out_dir, index)
    meta = read_metadata(samples_path)
    samples, rejects = pq.read_table(samples_path), pq.read_table(rejects_path)
    keys = [key64(k) for k in samples["record_key"].to_pylist()]
    moved = [_as_duplicate({**samples.slice(i, 1).to_pylist()[0], "where": dupes[k][1]}, dupes[k][0])
             for i, k in enumerate(keys) if k in dupes and k not in drop]
    samples = samples.filter(pa.array([k not in drop and k not in dupes for k in keys], pa.bool_()))
    keep = [key64(k) not in drop for k in rejects["record_key"].to_pylist()]
    dropped = len(keys) - samples.num_rows - len(moved) + keep.count(False)
    rejects = rejects.filter(pa.array(keep, pa.bool_())).replace_schema_metadata(None)
    if moved:  # rows stay in source order, as a single pass would have written them
        rejects = pa.concat_tables([rejects, pa.Table.from_pylist(moved, schema=REJECTS)]).sort_by("record")
    if not (dropped or moved):
        return samples.num_rows, rejects.num_rows, 0
    if samples.num_rows + rejects.num_rows == 0:
        samples_path.unlink()  # incomplete first, then gone
        rejects_path.unlink()
        (out_dir / f"tokens-{index:05d}.parquet").unlink(missing_ok=True)
    else:
        # Samples first: killed in between, a moved row is in neither file, so the next run ingests it again.
        meta.update(accepted=samples.num_rows, rejected=rejects.num_rows, records=samples.num_rows + rejects.num_rows)
        write_table(samples_path, samples.replace_schema_metadata(None), meta)
        write_table(rejects_path, rejects)
    return samples.num_rows, rejects.num_rows, dropped


# --- plan -> one task per shard -> finish ---------------------------------------------------------------


@dataclass(frozen=True)
class ShardWork:
    """One shard to (re)build: its index and a file holding its records (pickled, in source order)."""

    index: int
    records: int
    path: str


@dataclass
class IngestPlan:
    """What a run will do. It lives in a staging folder beside `out_dir` (plan.json, ledger.pkl, one
    work-XXXXX.pkl per shard), so shard tasks on other processes or machines get it by path."""

    out_dir: str
    stage: str
    uri: str
    cfg: IngestConfig
    source: dict[str, Any]
    records_in: int = 0
    kept: int = 0
    work: list[ShardWork] = field(default_factory=list)
    started: float = 0.0  # wall clock (time.time): the shard tasks may run on other machines

    @property
    def changes(self) -> bool:
        """False when the run finds nothing to build, drop or fix: the live shards stay as they are."""
        return bool(self.work) or bool(self._ledger().drop)

    @property
    def path(self) -> str:
        return str(Path(self.stage) / "plan.json")

    def save(self) -> str:
        data = {**self.__dict__, "cfg": self.cfg.model_dump(mode="json"), "work": [w.__dict__ for w in self.work]}
        write_json(self.path, data)
        return self.path

    @classmethod
    def load(cls, path: str | Path) -> IngestPlan:
        data = read_json(path)
        return cls(**{**data, "cfg": IngestConfig.model_validate(data["cfg"]),
                      "work": [ShardWork(**w) for w in data["work"]]})

    def _ledger(self) -> _Ledger:
        with open(Path(self.stage) / "ledger.pkl", "rb") as fh:
            return pickle.load(fh)  # our own staging file, written by plan_ingest


def staging_root(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.staging"


def plan_ingest(source: Source, out_dir: str | Path, cfg: IngestConfig, retry_rejected: bool = False) -> IngestPlan:
    """Reads the ledger and streams the source once: which records need processing, cut into shards.

    The shard files are written as the source streams, so memory stays bounded by one shard. Call it
    under `folder_lock(out_dir)`: it removes what killed runs left, which may not be another live run's.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging_root(out_dir), ignore_errors=True)  # earlier runs' (killed) staging folders
    stage = staging_root(out_dir) / uuid.uuid4().hex
    stage.mkdir(parents=True)
    plan = IngestPlan(str(out_dir), str(stage), source.storage.uri, cfg, source.describe(), started=time.time())
    ledger = _Ledger.read(out_dir)
    seen: dict[int, int] = {}  # record key -> its record number in this pass
    repeats: dict[int, int] = {}  # source key -> how many times it has come so far (only repeated keys)
    next_index = (ledger.shards[-1] + 1) if ledger.shards else 0
    batch: list[tuple] = []

    def cut() -> None:
        work = ShardWork(next_index + len(plan.work), len(batch), str(stage / f"work-{len(plan.work):05d}.pkl"))
        with open(work.path, "wb") as fh:
            pickle.dump(batch, fh, protocol=pickle.HIGHEST_PROTOCOL)
        plan.work.append(work)
        batch.clear()

    for rec in source.records():
        plan.records_in += 1
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
            if old[0] == key64(rec.digest()) and not (retry_rejected and old[2]) and rk not in ledger.redo:
                plan.kept += 1
                continue
            ledger.drop.setdefault(old[1], set()).add(rk)  # edited or retried: the new row replaces it
        batch.append((rec, record_key, problem))
        if len(batch) == cfg.shard_size:
            cut()
    if batch:
        cut()
    # Records of earlier runs that are no longer in the source
    for k, (_, index, _) in ledger.records.items():
        if k not in seen:
            ledger.drop.setdefault(index, set()).add(k)
    ledger.records = {}  # not needed any more; keeps ledger.pkl small
    with open(stage / "ledger.pkl", "wb") as fh:
        pickle.dump(ledger, fh, protocol=pickle.HIGHEST_PROTOCOL)
    plan.save()
    return plan


def ingest_shard(plan: IngestPlan, work: ShardWork, workers: int = 1,
                 pool: ProcessPoolExecutor | None = None) -> ShardResult:
    """Decodes one planned shard's records and writes its shard pair (image duplicates: finish_ingest).

    Args:
        workers: processes that read and decode images (1: in this process, e.g. on a Dask worker).
        pool: a process pool of `workers` to reuse across shards (default: one for this shard).
    """
    with open(work.path, "rb") as fh:
        items = pickle.load(fh)  # our own staging file, written by plan_ingest
    rows = list(_ordered_map(plan.uri, plan.cfg, items, workers, pool))
    out_dir = Path(plan.out_dir)
    accepted = [r for r in rows if "image" in r]
    images = [[r["image_sha256"][:16], r["sample_id"], r["record_key"], r["where"]] for r in accepted]
    write_json(Path(plan.stage) / f"images-{work.index:05d}.json", images)  # for finish_ingest, before the shard
    return _write_shard(out_dir, work.index, rows, plan.cfg)


def _write_shard(out_dir: Path, index: int, rows: list[dict], cfg: IngestConfig) -> ShardResult:
    accepted = [r for r in rows if "image" in r]
    rejected = [r for r in rows if "image" not in r]
    samples_path, rejects_path = shard_paths(out_dir, index)
    write_table(rejects_path, pa.Table.from_pylist(rejected, schema=REJECTS))
    meta = {"index": index, "records": len(rows), "accepted": len(accepted), "rejected": len(rejected),
            "ingest": cfg.model_dump(mode="json")}
    write_table(samples_path, pa.Table.from_pylist(accepted, schema=SAMPLES), meta)  # last: marks it complete
    return ShardResult(index, str(samples_path), str(rejects_path), len(accepted), len(rejected), True,
                       f"{socket.gethostname()}:{os.getpid()}")


def finish_ingest(plan: IngestPlan, results: list[ShardResult]) -> IngestReport:
    """Marks image duplicates (the first in source order wins), drops replaced rows from old shards,
    checks records in = accepted + rejected and removes the staging folder."""
    out_dir = Path(plan.out_dir)
    ledger = plan._ledger()
    if sorted(r.index for r in results) != [w.index for w in plan.work]:
        raise RuntimeError(f"ingest of {out_dir}: shards {sorted(r.index for r in results)} were written, "
                           f"the plan has {[w.index for w in plan.work]}")
    report = IngestReport(source=plan.source, records_in=plan.records_in, kept=plan.kept,
                          processed=sum(w.records for w in plan.work))
    dupes: dict[int, dict[int, tuple[str, str]]] = {}  # shard -> record key -> (kept sample id, where)
    for result in sorted(results, key=lambda r: r.index):
        for prefix, sid, record_key, where in read_json(Path(plan.stage) / f"images-{result.index:05d}.json"):
            kept = ledger.images.setdefault(int(prefix, 16), sid)
            if kept != sid:  # (an edited record may keep its image)
                dupes.setdefault(result.index, {})[key64(record_key)] = (kept, where)
    for result in sorted(results, key=lambda r: r.index):
        if result.index in dupes:
            accepted, rejected, _ = _rewrite(out_dir, result.index, set(), dupes[result.index])
            result = replace(result, accepted=accepted, rejected=rejected)
        report.shards.append(result)
    new = {s.index for s in report.shards}
    for index in ledger.shards:
        if index in ledger.drop:
            accepted, rejected, dropped = _rewrite(out_dir, index, ledger.drop[index], {})
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
    shutil.rmtree(plan.stage, ignore_errors=True)
    try:
        staging_root(out_dir).rmdir()
    except OSError:  # not empty (another staging folder) or gone
        pass
    report.seconds = time.time() - plan.started
    if report.accepted + report.rejected != report.records_in:
        raise RuntimeError(f"record count mismatch in {out_dir}: {report.records_in} records in the source, "
                           f"{report.accepted} accepted + {report.rejected} rejected")
    return report


def ingest(source: Source, out_dir: str | Path, cfg: IngestConfig, workers: int = 1,
           retry_rejected: bool = False, progress: Callable[[ShardResult, IngestReport], None] | None = None
           ) -> IngestReport:
    """Ingests `source` into shards under `out_dir`, resuming or extending what earlier runs wrote.

    The same steps an orchestrator runs as separate tasks (plan_ingest, ingest_shard per shard,
    finish_ingest), here one after another under the folder's lock.

    Args:
        workers: processes that read and decode images (1: in this process).
        retry_rejected: process records rejected by an earlier run again (e.g. after fixing files).
        progress: called after each shard is written.
    """
    with folder_lock(out_dir), ExitStack() as stack:
        plan = plan_ingest(source, out_dir, cfg, retry_rejected)
        pool = stack.enter_context(process_pool(workers)) if workers > 1 and plan.work else None
        running = IngestReport(source=plan.source, records_in=plan.records_in, kept=plan.kept)
        results = []
        for work in plan.work:
            results.append(ingest_shard(plan, work, workers, pool))
            running.processed += work.records
            if progress:
                progress(results[-1], running)
        return finish_ingest(plan, results)
