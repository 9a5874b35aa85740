"""Extract: the frozen encoders write one feature shard per sample shard, then the features manifest.

Steps (a Prefect task per shard; `run` chains them in one process):

    extract_shard   one sample shard -> the feature shard of the same index (kept when its inputs match)
    finish          the manifest, written last: it marks the features complete
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmcore import features as F
from mmcore.catalog import Catalog, FeaturesDir
from mmcore.config import PipelineConfig
from mmcore.models.contrastive import DualEncoder
from mmcore.stages.hooks import Hooks
from mmcore.training.contrastive import load_encoder
from mmcore.training.loop import select_device


@dataclass(frozen=True)
class ShardFeatures:
    index: int
    path: Path
    rows: int
    reused: bool  # an earlier run had written it from the same inputs

    @property
    def outputs(self) -> list[Path]:
        return [self.path]


@dataclass(frozen=True)
class ExtractResult:
    features: FeaturesDir
    digest: str  # of the feature shards
    dataset_digest: str
    encoder_sha256: str
    rows: int
    shards: int
    reused: int  # shards kept from an earlier run

    @property
    def outputs(self) -> list[Path]:
        return [self.features.manifest]


def shard_indexes(cat: Catalog) -> list[int]:
    """The sample shards of the ingested dataset, one extract task each."""
    return list(cat.processed.entries())


def shard_inputs(cat: Catalog, index: int) -> dict[str, str]:
    """What one feature shard depends on: the encoder, its sample and token shards, and where it goes."""
    entry = cat.processed.entries()[index]
    return {"encoder": cat.pretrain.digest(), "samples": entry["samples_sha256"], "tokens": entry["tokens_sha256"],
            "out": str(cat.features.shard(index).resolve())}


def extract_shard(cfg: PipelineConfig, cat: Catalog, index: int, model: DualEncoder | None = None,
                  clock: F.Clock | None = None) -> ShardFeatures:
    """Write the feature shard of sample shard `index` (`model`: the loaded encoder, to reuse across shards)."""
    device = select_device(cfg.pretrain.device)
    model = model or load_encoder(cat.pretrain.encoder, device)
    out = F.extract_shard(model, cat.processed.samples(index), cat.processed.tokens(index), cat.features.shard(index),
                          cat.pretrain.digest(), device, clock=clock)
    return ShardFeatures(index, cat.features.shard(index), out["rows"], out["skipped"])


def finish(cfg: PipelineConfig, cat: Catalog, shards: list[ShardFeatures]) -> ExtractResult:
    """Write the manifest over the shards, in shard order."""
    shards = sorted(shards, key=lambda s: s.index)
    listed = [{"path": s.path.name, "rows": s.rows} for s in shards]
    manifest = F.write_manifest(cat.features, listed, cat.pretrain.encoder, cat.processed)
    return ExtractResult(cat.features, manifest["digest"], manifest["processed_digest"], manifest["encoder_sha256"],
                         manifest["rows"], len(shards), sum(s.reused for s in shards))


def run(cfg: PipelineConfig, cat: Catalog, hooks: Hooks | None = None) -> ExtractResult:
    """The whole stage in this process, the encoder loaded once."""
    hooks = hooks or Hooks()
    model = load_encoder(cat.pretrain.encoder, select_device(cfg.pretrain.device))
    shards = []
    for index in shard_indexes(cat):
        shards.append(extract_shard(cfg, cat, index, model))
        hooks.log(f"extract: shard {index}, {shards[-1].rows} rows{' (kept)' if shards[-1].reused else ''}")
    return finish(cfg, cat, shards)
