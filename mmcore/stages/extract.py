"""Extract: the frozen encoders write one feature shard per sample shard, then the features manifest.

Steps (a Prefect task per shard; `run` chains them in one process):

    extract_shard   one sample shard -> the feature shard of the same index (kept when it reads and its
                    inputs match; a corrupt one is written again, with a warning)
    finish          the manifest, written last: it marks the features complete

The encoder is checked once before any shard (`Catalog.require("pretrain")` in the flow, `load_encoder` in
`run`): a corrupt one is one error naming it, not one per shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmcore import features as F
from mmcore import integrity
from mmcore.catalog import Catalog, FeaturesDir
from mmcore.config import PipelineConfig
from mmcore.io import file_sha256
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
    sha256: str

    @property
    def outputs(self) -> dict[Path, str]:
        return {self.path: self.sha256}


@dataclass(frozen=True)
class ExtractResult:
    features: FeaturesDir
    digest: str  # of the feature shards
    dataset_digest: str
    encoder_sha256: str
    rows: int
    shards: int
    reused: int  # shards kept from an earlier run
    files: dict[Path, str]  # the manifest and each shard -> its sha256

    @property
    def outputs(self) -> dict[Path, str]:
        return dict(self.files)


def shard_indexes(cat: Catalog) -> list[int]:
    """The sample shards of the ingested dataset, one extract task each."""
    return list(cat.processed.entries())


def shard_inputs(cat: Catalog, index: int) -> dict[str, str]:
    """What one feature shard depends on: the encoder, its sample and token shards, and where it goes."""
    entry = cat.processed.entries()[index]
    return {"encoder": cat.pretrain.digest(), "samples": entry["samples_sha256"], "tokens": entry["tokens_sha256"],
            "out": str(cat.features.shard(index).resolve())}


def extract_shard(cfg: PipelineConfig, cat: Catalog, index: int, model: DualEncoder | None = None,
                  clock: F.Clock | None = None, hooks: Hooks | None = None, fresh: bool = False) -> ShardFeatures:
    """Write the feature shard of sample shard `index` (`model`: the loaded encoder, to reuse across shards).

    `fresh` writes it without reading the shard already there; otherwise a shard that reads and was written
    from the same inputs is kept, and a corrupt one is written again (`hooks.warn` names it).
    """
    device = select_device(cfg.pretrain.device)
    model = model or load_encoder(cat.pretrain.encoder, device)
    path = cat.features.shard(index)
    out = F.extract_shard(model, cat.processed.samples(index), cat.processed.tokens(index), path,
                          cat.pretrain.digest(), device, clock=clock, fresh=fresh, warn=(hooks or Hooks()).warn)
    return ShardFeatures(index, path, out["rows"], out["skipped"], file_sha256(path))


def finish(cfg: PipelineConfig, cat: Catalog, shards: list[ShardFeatures], hooks: Hooks | None = None,
           fresh: bool = False) -> ExtractResult:
    """Write the manifest over the shards, in shard order (replacing a corrupt one says so, unless `fresh`)."""
    manifest_path = cat.features.manifest
    if not fresh and manifest_path.exists() and (why := integrity.problem(manifest_path)) is not None:
        (hooks or Hooks()).warn(f"{manifest_path} is corrupt ({why}): writing it again")
    shards = sorted(shards, key=lambda s: s.index)
    listed = [{"path": s.path.name, "rows": s.rows} for s in shards]
    manifest = F.write_manifest(cat.features, listed, cat.pretrain.encoder, cat.processed)
    files = {manifest_path: file_sha256(manifest_path),
             **{cat.features.path / s["path"]: s["sha256"] for s in manifest["shards"]}}
    return ExtractResult(cat.features, manifest["digest"], manifest["processed_digest"], manifest["encoder_sha256"],
                         manifest["rows"], len(shards), sum(s.reused for s in shards), files)


def run(cfg: PipelineConfig, cat: Catalog, hooks: Hooks | None = None, fresh: bool = False) -> ExtractResult:
    """The whole stage in this process, the encoder loaded once; `fresh` writes every shard again."""
    hooks = hooks or Hooks()
    model = load_encoder(cat.pretrain.encoder, select_device(cfg.pretrain.device))
    shards = []
    for index in shard_indexes(cat):
        shards.append(extract_shard(cfg, cat, index, model, hooks=hooks, fresh=fresh))
        hooks.log(f"extract: shard {index}, {shards[-1].rows} rows{' (kept)' if shards[-1].reused else ''}")
    return finish(cfg, cat, shards, hooks, fresh)
