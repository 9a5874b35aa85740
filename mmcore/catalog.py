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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmcore.config import PipelineConfig


@dataclass(frozen=True)
class Catalog:
    root: Path
    dataset: str
    ingest_key: str
    pretrain_key: str
    heads_key: str

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> Catalog:
        return cls(
            root=Path(cfg.data_root),
            dataset=cfg.dataset,
            ingest_key=cfg.digest("ingest"),
            pretrain_key=cfg.digest("ingest", "encoder", "pretrain"),
            heads_key=cfg.digest("ingest", "encoder", "pretrain", "heads"),
            source_uri=cfg.ingest.source,
        )

    source_uri: str | None = None  # a dataset kept elsewhere (folder, file or s3:// URI) instead of raw/

    @property
    def raw(self) -> Path:
        return self.root / "raw" / self.dataset

    @property
    def source(self) -> str:
        return self.source_uri or str(self.raw)

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
