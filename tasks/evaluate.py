"""Evaluation tasks over `mmcore.stages.evaluate`: test-split metrics (cached on the features', heads' and
dataset's digests), logged to MLflow, and the report with the champion gate's decision as a Prefect
artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.report import report_markdown
from mmcore.stages import evaluate as S
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, keyed_on
from tasks.register import champion_scores


@task(cache_key_fn=keyed_on("evaluate", lambda p: S.inputs(p["cfg"], p["cat"])), persist_result=True,
      cache_expiration=CACHE_EXPIRATION)
def evaluate(cfg: PipelineConfig, cat: Catalog, run_id: str) -> S.EvaluateResult:
    """Evaluate every head on the test split."""
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", cat.features, cat.features.digest(), "test")
    return S.run(cfg, cat)


@task
def log_evaluation(result: S.EvaluateResult, run_id: str) -> None:
    """The metrics and examples into the evaluate run (also for a cached evaluation); the VQA head's answers as
    `vqa_results.json`, in the official results format."""
    tracking.log_metrics(run_id, result.metrics)
    for head, rows in result.examples.items():
        tracking.log_dict(run_id, rows, "vqa_results.json" if head == "vqa" else f"{head}_examples.json")


@task
def publish_report(cfg: PipelineConfig, result: S.EvaluateResult, model: dict[str, Any] | None = None) -> str:
    """Create the `<dataset>-evaluation` markdown artifact; `model` is the registration's result (the gate's
    decision). Without it (evaluation only), the champion column shows the current champion."""
    if model is not None:
        champion = model["champion"]  # the champion the gate compared with, as it was before registration
    else:
        scores = champion_scores(cfg)
        champion = None if scores is None else {"version": scores.version, "metrics": dict(scores.metrics)}
    markdown = report_markdown(result.metrics, result.examples, champion, model, cfg.registry.alias)
    create_markdown_artifact(key=f"{cfg.dataset.lower().replace('_', '-').replace('.', '-')}-evaluation",
                             markdown=markdown, description="test-split evaluation and promotion")
    return markdown
