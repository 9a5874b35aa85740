"""Evaluate: every test metric the model and data support, each beside its baseline, and examples of
what the generating heads write. Corrupt inputs (a feature shard, the heads) are an error naming the file
and the stage that writes it again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcore.catalog import SECTIONS, Catalog
from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.evaluation import evaluate_all
from mmcore.features import load_features
from mmcore.training.heads import load_heads
from mmcore.training.loop import select_device


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]
    examples: dict[str, list[dict[str, Any]]]  # by head: caption, translation, generation
    features_digest: str
    heads_sha256: str

    @property
    def outputs(self) -> dict[Path, str]:
        return {}  # the result itself is the output


def inputs(cfg: PipelineConfig, cat: Catalog) -> dict[str, str]:
    """What the metrics depend on: the features, the heads, the dataset and the config."""
    return {"features": cat.features.digest(), "heads": cat.heads.digest(), "dataset": cat.processed.digest(),
            "config": cfg.digest(*SECTIONS["evaluate"]), "at": str(cat.heads.path.resolve())}


def run(cfg: PipelineConfig, cat: Catalog) -> EvaluateResult:
    device = select_device(cfg.heads.device)
    heads = load_heads(cat.heads.heads, device)
    cat.features.verify()
    train = load_features(cat.features, cat.processed, ("train",), images=False, text_embeddings=False)  # texts only
    test = load_features(cat.features, cat.processed, ("test",))
    metrics, examples = evaluate_all(train, test, heads, load_tokenizer(cat.processed), device, cfg)
    return EvaluateResult(metrics, examples, cat.features.digest(), cat.heads.digest())
