"""The plan of one ingest run: which records need processing, cut into shards, in a staging folder that
shard tasks on other processes or machines read by path."""

from __future__ import annotations

import pickle
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data import records as R
from mmcore.data.ingest.decode import key64
from mmcore.data.ingest.ledger import Ledger
from mmcore.data.sources.base import Source
from mmcore.io import read_json, write_json


@dataclass(frozen=True)
class ShardWork:
    """One shard to (re)build: its index and a file holding its records (pickled, in source order), in the
    plan's staging folder (`IngestPlan.work_file` finds it in a copy of that folder too)."""

    index: int
    records: int
    path: str


@dataclass
class IngestPlan:
    """What a run will do. It lives in a staging folder beside the dataset (`processed.staging`: plan.json,
    ledger.pkl, one work file per shard), so shard tasks on other processes or machines get it by path."""

    processed: ProcessedDir
    stage: str
    uri: str
    cfg: IngestConfig
    source: dict[str, Any]
    records_in: int = 0
    kept: int = 0
    work: list[ShardWork] = field(default_factory=list)
    started: float = 0.0  # wall clock (time.time): the shard tasks may run on other machines
    repairs: list[str] = field(default_factory=list)  # damaged shards the ledger dropped: warnings for the log

    @property
    def changes(self) -> bool:
        """False when the run finds nothing to build, drop or fix: the live shards stay as they are."""
        return bool(self.work) or bool(self.repairs) or bool(self.ledger().drop)

    @property
    def path(self) -> str:
        return str(Path(self.stage) / "plan.json")

    def save(self) -> str:
        data = {**self.__dict__, "processed": str(self.processed.path), "cfg": self.cfg.model_dump(mode="json"),
                "work": [w.__dict__ for w in self.work]}
        write_json(self.path, data)
        return self.path

    @classmethod
    def load(cls, path: str | Path, processed: ProcessedDir | None = None) -> IngestPlan:
        """The plan saved at `path`; its staging files are those beside `path`, so a copy of the staging folder
        elsewhere (a worker's own working copy) serves as well. `processed`: where its shards go instead of the
        planned folder (the same dataset folder in that working copy)."""
        data = read_json(path)
        return cls(**{**data, "stage": str(Path(path).parent),
                      "processed": processed or ProcessedDir(Path(data["processed"])),
                      "cfg": IngestConfig.model_validate(data["cfg"]), "work": [ShardWork(**w) for w in data["work"]]})

    def ledger(self) -> Ledger:
        """The ledger of earlier runs as plan_ingest left it: what to drop from old shards, the kept images."""
        with open(self._ledger_file, "rb") as fh:
            return pickle.load(fh)  # our own staging file, written by plan_ingest

    def save_ledger(self, ledger: Ledger) -> None:
        with open(self._ledger_file, "wb") as fh:
            pickle.dump(ledger, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def work_file(self, work: ShardWork) -> Path:
        """The records of `work`, in this plan's staging folder (wherever the plan was loaded from)."""
        return Path(self.stage) / Path(work.path).name

    @property
    def shared_files(self) -> list[str]:
        """The staging files a shard task reads (the plan and the work files), by name: what a worker on
        another machine needs of the staging folder (not the ledger, which only finish reads)."""
        return [Path(self.path).name, *(Path(w.path).name for w in self.work)]

    def images_file(self, index: int) -> Path:
        """Where the shard task of `index` lists its accepted images for finish_ingest."""
        return Path(self.stage) / f"images-{index:05d}.json"

    @property
    def _ledger_file(self) -> Path:
        return Path(self.stage) / "ledger.pkl"


def plan_ingest(source: Source, processed: ProcessedDir, cfg: IngestConfig, retry_rejected: bool = False
                ) -> IngestPlan:
    """Reads the ledger and streams the source once: which records need processing, cut into shards.

    The shard files are written as the source streams, so memory stays bounded by one shard. Call it
    under `folder_lock(processed.path)`: it removes what killed runs left, which may not be another live run's.
    """
    processed.path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(processed.staging, ignore_errors=True)  # earlier runs' (killed) staging folders
    stage = processed.staging / uuid.uuid4().hex
    stage.mkdir(parents=True)
    plan = IngestPlan(processed, str(stage), source.storage.uri, cfg, source.describe(), started=time.time())
    ledger = Ledger.read(processed)
    seen = _cut_shards(plan, source.records(), ledger, retry_rejected)
    # Records of earlier runs that are no longer in the source
    for k, (_, index, _) in ledger.records.items():
        if k not in seen:
            ledger.drop.setdefault(index, set()).add(k)
    ledger.records = {}  # not needed any more; keeps ledger.pkl small
    plan.repairs = ledger.repairs
    plan.save_ledger(ledger)
    plan.save()
    if plan.changes:  # the manifest describes the shards on disk (their digests): gone until finish writes it
        processed.manifest.unlink(missing_ok=True)
    return plan


def _cut_shards(plan: IngestPlan, records: Iterable[R.SourceRecord], ledger: Ledger, retry_rejected: bool
                ) -> dict[int, int]:
    """Counts the records into `plan`, keeps those the ledger holds unchanged, marks the old rows of edited
    or retried ones for dropping and cuts the rest into shards; returns record key -> record number."""
    seen: dict[int, int] = {}  # record key -> its record number in this pass
    repeats: dict[int, int] = {}  # source key -> how many times it has come so far (only repeated keys)
    first_index = (ledger.shards[-1] + 1) if ledger.shards else 0
    batch: list[tuple] = []
    for rec in map(R.storable, records):
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
        if len(batch) == plan.cfg.shard_size:
            _add_work(plan, first_index, batch)
            batch = []
    if batch:
        _add_work(plan, first_index, batch)
    return seen


def _add_work(plan: IngestPlan, first_index: int, items: list[tuple]) -> None:
    """Writes the next shard's records (the process_record arguments after `cfg`) to its work file."""
    path = Path(plan.stage) / f"work-{len(plan.work):05d}.pkl"
    with open(path, "wb") as fh:
        pickle.dump(items, fh, protocol=pickle.HIGHEST_PROTOCOL)
    plan.work.append(ShardWork(first_index + len(plan.work), len(items), str(path)))
