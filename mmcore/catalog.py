"""The one place that says where each stage's data lives and what every file is called.

data_root/
  raw/<dataset>/                      the source dataset, in any format mmcore/data/sources reads
                                      (or ingest.source: a folder, file or s3:// URI elsewhere)
  processed/<dataset>/<ingest key>/   samples-NNNNN, tokens-NNNNN, rejects-NNNNN shards, tokenizer, manifest
  models/<dataset>/pretrain-<key>/    the encoder (encoder.pt) and its resume checkpoint
  features/<dataset>/<pretrain key>/  features-NNNNN shards (row-aligned with samples-NNNNN) + manifest
  models/<dataset>/heads-<key>/       the task heads (heads.pt)

Keys are digests of the config sections a stage depends on (`SECTIONS`), so a changed setting never
reads a stale output and two configs never overwrite each other's files. Each folder has one file that
marks it complete, written last (`COMPLETION_MARKS`).

`data_root` may be an object-store URI (`s3://bucket/prefix`). Stages then work on a local working copy
of the same layout (`data_cache`; `root` below), pull the folders they read from the store first and
push the folders they wrote after (`mmcore.data.mirror`), so stages on different machines share data
through the store. The raw dataset is read from the store directly.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mmcore import integrity
from mmcore.config import PipelineConfig
from mmcore.io import file_sha256, is_uri, read_json

MANIFEST = "manifest.json"
SPILL = ".spill-"  # prefix of the heads' scratch folders of image vectors (mmcore/stages/train.py)
TOKENIZER = "tokenizer.json"
ENCODER = "encoder.pt"
HEADS = "heads.pt"
COMPLETION_MARKS = (MANIFEST, ENCODER, HEADS)  # what each folder writes last: copied last, checked first

# The config sections each stage's output depends on: they key its folder and its cache entry.
SECTIONS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    "pretrain": ("ingest", "encoder", "pretrain"),
    "extract": ("ingest", "encoder", "pretrain"),
    "train": ("ingest", "encoder", "pretrain", "heads"),
    "evaluate": ("ingest", "encoder", "pretrain", "heads", "evaluate"),
}
SHARD_KINDS = ("samples", "tokens", "rejects", "features")
_SHARD = re.compile(r"^(samples|tokens|rejects|features)-(\d{5,})\.parquet$")


def shard_name(kind: str, index: int) -> str:
    """`samples-00012.parquet` and its siblings: shards of one index hold the same records, row for row."""
    if kind not in SHARD_KINDS:
        raise ValueError(f"unknown shard kind {kind!r}; valid: {', '.join(SHARD_KINDS)}")
    return f"{kind}-{index:05d}.parquet"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    """(kind, index) of a shard file name, None for any other file."""
    match = _SHARD.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def default_cache(uri: str) -> Path:
    """Where the working copy of an object-store root goes unless `data_cache` says otherwise."""
    parsed = urlparse(uri)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mmcore" / parsed.scheme / parsed.netloc / parsed.path.strip("/")


class _Folder:
    """A stage's output folder: `path`, usable wherever a path is (os.fspath, str)."""

    path: Path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class ProcessedDir(_Folder):
    """An ingested dataset: sample, token and reject shards (one of each per index), tokenizer, manifest."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    def samples(self, index: int) -> Path:
        return self.path / shard_name("samples", index)

    def tokens(self, index: int) -> Path:
        return self.path / shard_name("tokens", index)

    def rejects(self, index: int) -> Path:
        return self.path / shard_name("rejects", index)

    def shard_files(self, kind: str) -> dict[int, Path]:
        """index -> path of every `kind` shard on disk."""
        found = {}
        for path in self.path.glob(f"{kind}-*.parquet"):
            parsed = parse_shard_name(path.name)
            if parsed is not None and parsed[0] == kind:
                found[parsed[1]] = path
        return dict(sorted(found.items()))

    def listed(self, kind: str) -> list[Path]:
        """The `kind` shards (samples, tokens or rejects) of the complete dataset, as its manifest lists them."""
        return [self.path / shard[kind] for shard in read_json(self.manifest)["shards"]]

    def entries(self) -> dict[int, dict[str, Any]]:
        """Shard index -> its manifest entry (file names, digests, counts), for the complete dataset."""
        out = {}
        for entry in read_json(self.manifest)["shards"]:
            parsed = parse_shard_name(entry["samples"])
            if parsed is None:
                raise ValueError(f"{self.manifest} lists {entry['samples']!r}, which is not a sample shard name")
            out[parsed[1]] = entry
        return out

    @property
    def staging(self) -> Path:
        """Scratch space of running ingests, beside the folder (not in it: the folder holds only data)."""
        return self.path.parent / f".{self.path.name}.staging"

    def digest(self) -> str:
        """Content digest of the dataset (its shards and tokenizer), from the manifest."""
        return read_json(self.manifest)["digest"]


@dataclass(frozen=True)
class PretrainDir(_Folder):
    """The pretrained encoders: encoder.pt (the result) and the checkpoint a killed run resumes from."""

    path: Path

    @property
    def encoder(self) -> Path:
        return self.path / ENCODER

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def launch_spec(self) -> Path:
        """The config and catalog a data-parallel (torchrun) run reads, written once by its launcher."""
        return self.path / "launch.json"

    def digest(self) -> str:
        return file_sha256(self.encoder)


@dataclass(frozen=True)
class FeaturesDir(_Folder):
    """Frozen features: one shard per sample shard of the same index, and the manifest."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def shard(self, index: int) -> Path:
        return self.path / shard_name("features", index)

    def listed(self) -> list[Path]:
        """The feature shards of the complete folder, as its manifest lists them."""
        return list(self.recorded())

    def recorded(self) -> dict[Path, str | None]:
        """Each feature shard of the complete folder -> the sha256 its manifest records for it."""
        try:
            return {self.path / s["path"]: s.get("sha256") for s in self._manifest()["shards"]}
        except (KeyError, TypeError):
            raise integrity.CorruptOutput(self.manifest, "not a features manifest", "extract") from None

    def verify(self) -> list[Path]:
        """The feature shards, each checked against the sha256 the manifest records; a missing or corrupt
        manifest or shard is an error naming it and the extract stage."""
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.manifest} does not exist: run the extract stage first (or the pipeline)")
        files = self.recorded()
        integrity.require_intact(files, "extract")
        return list(files)

    def digest(self) -> str:
        return self._manifest()["digest"]

    def _manifest(self) -> dict[str, Any]:
        return integrity.read_json(self.manifest, "extract")


@dataclass(frozen=True)
class HeadsDir(_Folder):
    """The trained task heads."""

    path: Path

    @property
    def heads(self) -> Path:
        return self.path / HEADS

    def digest(self) -> str:
        return file_sha256(self.heads)


@dataclass(frozen=True)
class BundleDir(_Folder):
    """A registered model's files: everything inference needs, and nothing from the data root."""

    path: Path

    @property
    def encoder(self) -> Path:
        return self.path / ENCODER

    @property
    def heads(self) -> Path:
        return self.path / HEADS

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    @property
    def index(self) -> Path:
        return self.path / "index.parquet"  # the images text search ranks

    @property
    def meta(self) -> Path:
        return self.path / "bundle.json"

    @property
    def files(self) -> tuple[Path, ...]:
        return self.encoder, self.heads, self.tokenizer, self.index, self.meta


_PRODUCED_BY = {"ingest": "processed", "pretrain": "pretrain", "extract": "features", "train": "heads"}
_MARK_OF = {"processed": "manifest", "pretrain": "encoder", "features": "manifest", "heads": "heads"}
STAGE_OF = {folder: stage for stage, folder in _PRODUCED_BY.items()}  # "features" -> "extract": what writes it


@dataclass(frozen=True)
class Catalog:
    root: Path  # local: data_root itself, or the working copy of an object-store data_root
    dataset: str
    ingest_key: str
    pretrain_key: str
    heads_key: str
    source_uri: str | None = None  # a dataset kept elsewhere (folder, file or s3:// URI) instead of raw/
    remote_root: str | None = None  # the object-store data_root that `root` is a working copy of

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> Catalog:
        remote = cfg.data_root.rstrip("/") if is_uri(cfg.data_root) else None
        root = Path(cfg.data_cache) if cfg.data_cache else default_cache(remote) if remote else Path(cfg.data_root)
        return cls(
            root=root,
            dataset=cfg.dataset,
            ingest_key=cfg.digest(*SECTIONS["ingest"]),
            pretrain_key=cfg.digest(*SECTIONS["pretrain"]),
            heads_key=cfg.digest(*SECTIONS["train"]),
            source_uri=cfg.ingest.source,
            remote_root=remote,
        )

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "root": str(self.root)})

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        data: dict[str, Any] = json.loads(text)
        return cls(**{**data, "root": Path(data["root"])})

    def remote_of(self, folder: str | os.PathLike[str]) -> str | None:
        """The object-store URI of a folder of the working copy; None when data_root is local."""
        if self.remote_root is None:
            return None
        return f"{self.remote_root}/{Path(folder).relative_to(self.root).as_posix()}"

    @staticmethod
    def raw_root(data_root: str | Path, dataset: str) -> Path:
        """Where a dataset's raw files go under a local data root (`mm data synth`, `mm data fetch`)."""
        return Path(data_root) / "raw" / dataset

    @property
    def raw(self) -> Path:
        return self.raw_root(self.root, self.dataset)

    @property
    def raw_uri(self) -> str:
        """The raw dataset's location: in the store itself when data_root is one."""
        return self.remote_of(self.raw) or str(self.raw)

    @property
    def source(self) -> str:
        return self.source_uri or self.raw_uri

    @property
    def processed(self) -> ProcessedDir:
        return ProcessedDir(self.root / "processed" / self.dataset / self.ingest_key)

    @property
    def pretrain(self) -> PretrainDir:
        return PretrainDir(self.root / "models" / self.dataset / f"pretrain-{self.pretrain_key}")

    @property
    def features(self) -> FeaturesDir:
        return FeaturesDir(self.root / "features" / self.dataset / self.pretrain_key)

    @property
    def heads(self) -> HeadsDir:
        return HeadsDir(self.root / "models" / self.dataset / f"heads-{self.heads_key}")

    def require(self, stage: str) -> Path:
        """The completion mark of `stage`'s output (ingest, pretrain, extract or train), checked as its kind
        (`mmcore.integrity`: the encoder and heads load, a manifest parses); a missing or corrupt one is an
        error that names the stage to run (again)."""
        if stage not in _PRODUCED_BY:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(_PRODUCED_BY)}")
        folder = getattr(self, _PRODUCED_BY[stage])
        mark = getattr(folder, _MARK_OF[_PRODUCED_BY[stage]])
        if not mark.exists():
            raise FileNotFoundError(f"{mark} does not exist: run the {stage} stage first (or the pipeline)")
        why = integrity.problem(mark)
        if why is not None:
            raise integrity.CorruptOutput(mark, why, stage)
        return mark
