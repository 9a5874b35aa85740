"""Evaluate flow: test-split metrics beside baselines, then registration through the champion gate
(@champion only if the model beats the current champion on the same test split, else @challenger).

Run: `mm evaluate --preset demo` or `python -m flows.evaluate`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import DEFAULT
from mmcore.config import PipelineConfig


@flow(name="evaluate")
def evaluate_flow(cfg: PipelineConfig = DEFAULT, parent_run_id: str | None = None, promote: bool = True,
                  refresh: bool = False) -> dict[str, Any]:
    """Evaluate on the test split; with `promote`, register the model and let the champion gate alias it.
    Returns metrics, examples and the model version with the alias it got and why.

    The evaluation is cached on its inputs' digests (`refresh` evaluates again); a model whose files are
    already registered is not registered twice.
    """
    from mmcore.catalog import Catalog  # what the stage runs is imported as it starts (flows/common.py)
    from tasks import storage, tracking
    from tasks.caching import cached_tags, run_cached, timeout_seconds
    from tasks.evaluate import evaluate, log_evaluation, publish_report
    from tasks.register import register_model

    cat = Catalog.from_config(cfg)
    storage.pull(cat, cat.processed, cat.features, cat.heads)
    storage.pull(cat, cat.pretrain, only=[cat.pretrain.encoder.name])
    cat.require("train")  # each mark exists and loads (or parses): a corrupt one names the stage to refresh
    cat.require("extract")
    cat.require("pretrain")
    with tracking.stage_run(cfg, "evaluate", parent_run_id) as run_id:
        result, cached = run_cached(evaluate, cfg, cat, run_id, refresh=refresh, timeout=timeout_seconds(cfg))
        tracking.log_tags(run_id, cached_tags(cached))
        log_evaluation(result, run_id)
        model = register_model(cfg, cat, result.metrics, run_id) if promote else None
        publish_report(cfg, result, model)
    return {"metrics": result.metrics, "examples": result.examples, **({"model": model} if model else {})}


if __name__ == "__main__":
    evaluate_flow()
