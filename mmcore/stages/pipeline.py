"""Every stage in order, in this process: what the Prefect pipeline flow runs as tasks, without Prefect or
MLflow (for benchmarks, a GPU machine with only the library installed, and tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.stages import evaluate, extract, ingest, pretrain, train
from mmcore.stages.hooks import Hooks


@dataclass
class PipelineResult:
    ingest: ingest.IngestResult
    pretrain: pretrain.PretrainResult
    extract: extract.ExtractResult
    train: train.TrainResult
    evaluate: evaluate.EvaluateResult
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage


def run(cfg: PipelineConfig, cat: Catalog, hooks: Hooks | None = None, workers: int | None = None) -> PipelineResult:
    """ingest -> pretrain -> extract -> train -> evaluate; `workers`: ingest's decoding processes."""
    hooks = hooks or Hooks()
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        seconds[name] = time.perf_counter() - started
        started = time.perf_counter()

    ingested = ingest.run(cfg, cat, workers, hooks=hooks)
    lap("ingest")
    encoders = pretrain.run(cfg, cat, hooks)
    lap("pretrain")
    features = extract.run(cfg, cat, hooks)
    lap("extract")
    heads = train.run(cfg, cat, hooks)
    lap("train")
    scored = evaluate.run(cfg, cat)
    lap("evaluate")
    return PipelineResult(ingested, encoders, features, heads, scored, seconds)
