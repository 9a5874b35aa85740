"""Train: every task head the data supports, on the frozen features (VQA with its blind baselines,
captioning, translation, text generation). The feature shards are checked against their manifest first: a
corrupt one is an error naming it and the extract stage. The heads are written, never read."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mmcore import processes
from mmcore.catalog import SECTIONS, SPILL, Catalog, HeadsDir
from mmcore.config import HeadsConfig, PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.features import load_features
from mmcore.io import file_sha256
from mmcore.stages.hooks import Hooks
from mmcore.training import heads as head_training
from mmcore.training.loop import select_device

SCRATCH = SPILL  # the spilled image vectors, beside the heads while they train


@dataclass(frozen=True)
class TrainResult:
    heads: HeadsDir
    heads_sha256: str
    features_digest: str
    answers: int  # VQA answer classes (0: no VQA head)
    skipped: dict[str, str]  # head -> why it was not trained

    @property
    def outputs(self) -> dict[Path, str]:
        return {self.heads.heads: self.heads_sha256}


def inputs(cfg: PipelineConfig, cat: Catalog) -> dict[str, str]:
    """What the heads depend on: the features, the dataset (texts, token ids), the config and where they go."""
    return {"features": cat.features.digest(), "dataset": cat.processed.digest(),
            "config": cfg.digest(*SECTIONS["train"]), "out": str(cat.heads.path.resolve())}


def head_epochs(cfg: HeadsConfig, name: str) -> int:
    """Epochs the head `name` trains for: text heads their own count, the blind baselines theirs."""
    if name in ("translation", "generation"):
        return cfg.text_epochs
    if name.startswith("vqa_"):  # vqa_question_only, vqa_image_only
        return cfg.vqa_baseline_epochs or cfg.epochs
    return cfg.epochs


def run(cfg: PipelineConfig, cat: Catalog, hooks: Hooks | None = None) -> TrainResult:
    """Trains the heads. The image vectors of the train and val splits are spilled to a scratch folder beside
    the heads and read batch by batch (`DiskRows`), so memory holds the texts, not the features; the folder
    is removed at the end. The same batches as in memory, at the same speed (BENCHMARKS.md)."""
    hooks = hooks or Hooks()
    cat.features.verify()
    vocab = load_tokenizer(cat.processed).vocab_size
    processes.clear_scratch(cat.heads.path, SCRATCH)  # a killed run's
    scratch = processes.scratch(cat.heads.path, SCRATCH)
    try:
        train, val = (load_features(cat.features, cat.processed, (split,), scratch / split, text_embeddings=False)
                      for split in ("train", "val"))
        heads, skipped = head_training.train_heads(
            train, val, cfg.heads, vocab, select_device(cfg.heads.device),
            lambda name: hooks.epoch_callback(name, head_epochs(cfg.heads, name)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, why in skipped.items():
        hooks.log(f"head {name} not trained: {why}")
    head_training.save_heads(heads, cat.heads.heads)
    return TrainResult(cat.heads, file_sha256(cat.heads.heads), cat.features.digest(), len(heads.answers), skipped)
