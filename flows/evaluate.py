"""Evaluate flow: test-split metrics beside baselines, then registration through the champion gate
(@champion only if the model beats the current champion on the same test split, else @challenger).

Run: `mm evaluate --preset demo` or `python -m flows.evaluate`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import require, resolve
from mmcore.training.contrastive import ENCODER_FILE
from mmcore.training.heads import HEADS_FILE
from tasks import storage, tracking
from tasks.caching import cached_tags, run_stage_task, timeout_seconds
from tasks.evaluation import evaluate_model, publish_report
from tasks.registry import register_model


@flow(name="evaluate")
def evaluate_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                  parent_run_id: str | None = None, promote: bool = True, refresh: bool = False) -> dict[str, Any]:
    """Evaluate on the test split; with `promote`, register the model and let the champion gate alias it.
    Returns metrics, examples and the model version with the alias it got and why.

    The evaluation is cached on its inputs' digests (`refresh` evaluates again); a model whose files are
    already registered is not registered twice.
    """
    cfg, cat = resolve(preset, dataset, overrides)
    storage.pull(cat, cat.processed, cat.features, cat.heads)
    storage.pull(cat, cat.pretrain, only=[ENCODER_FILE])
    heads = require(cat.heads / HEADS_FILE, "train")
    encoder = require(cat.pretrain / ENCODER_FILE, "pretrain")
    with tracking.stage_run(cfg, "evaluate", parent_run_id) as run_id:
        result, cached = run_stage_task(evaluate_model, str(cat.features), str(cat.processed), heads, cfg, run_id,
                                        refresh=refresh, timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        if cached:  # the task's body, which logs them, did not run
            tracking.log_metrics(run_id, result["metrics"])
        if promote:
            result["model"] = register_model(cfg, encoder, heads, str(cat.processed), str(cat.features),
                                             cat.raw_uri, result["metrics"], run_id)
        publish_report(cfg, result["metrics"], result["examples"], result.get("model"))
    return result


if __name__ == "__main__":
    evaluate_flow()
