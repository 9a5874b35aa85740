"""The one place that says where each stage's data lives.

data_root/
  raw/<dataset>/                      the source dataset, in any format mmcore/data/sources reads
                                      (or ingest.source: a folder, file or s3:// URI elsewhere)
  processed/<dataset>/<ingest key>/   sample shards, token shards, rejects, tokenizer, manifest
  models/<dataset>/<pretrain key>/    contrastive encoder checkpoints
  features/<dataset>/<pretrain key>/  frozen feature shards + manifest
  models/<dataset>/<heads key>/       task-head checkpoints

Keys are digests of the config sections a stage depends on, so a changed setting never reads a
stale output and two configs never overwrite each other's files.

`data_root` may be an object-store URI (`s3://bucket/prefix`). Stages then work on a local working copy
of the same layout (`data_cache`; `root` below), pull the folders they read from the store first and
push the folders they wrote after (`mmcore.data.mirror`), so stages on different machines share data
through the store. The raw dataset is read from the store directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mmcore.config import PipelineConfig
from mmcore.data.storage import is_uri


def default_cache(uri: str) -> Path:
    """Where the working copy of an object-store root goes unless `data_cache` says otherwise."""
    parsed = urlparse(uri)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mmcore" / parsed.scheme / parsed.netloc / parsed.path.strip("/")


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
            ingest_key=cfg.digest("ingest"),
            pretrain_key=cfg.digest("ingest", "encoder", "pretrain"),
            heads_key=cfg.digest("ingest", "encoder", "pretrain", "heads"),
            source_uri=cfg.ingest.source,
            remote_root=remote,
        )

    def remote_of(self, path: Path) -> str | None:
        """The object-store URI of a folder of the working copy; None when data_root is local."""
        if self.remote_root is None:
            return None
        return f"{self.remote_root}/{Path(path).relative_to(self.root).as_posix()}"

    @property
    def raw(self) -> Path:
        return self.root / "raw" / self.dataset

    @property
    def raw_uri(self) -> str:
        """The raw dataset's location: in the store itself when data_root is one."""
        return self.remote_of(self.raw) or str(self.raw)

    @property
    def source(self) -> str:
        return self.source_uri or self.raw_uri

    @property
    def processed(self) -> Path:
        return self.root / "processed" / self.dataset / self.ingest_key

    @property
    def pretrain(self) -> Path:
        return self.root / "models" / self.dataset / f"pretrain-{self.pretrain_key}"

    @property
    def features(self) -> Path:
        return self.root / "features" / self.dataset / self.pretrain_key

    @property
    def heads(self) -> Path:
        return self.root / "models" / self.dataset / f"heads-{self.heads_key}"
