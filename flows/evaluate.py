"""Evaluate flow: test-split metrics beside baselines, then registration as the champion model.

Run: `mm evaluate --preset demo` or `python -m flows.evaluate`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import require, resolve
from mmcore.training.contrastive import ENCODER_FILE
from mmcore.training.heads import HEADS_FILE
from tasks import tracking
from tasks.evaluation import evaluate_model
from tasks.registry import register_model


@flow(name="evaluate")
def evaluate_flow(preset: str = "demo", dataset: str | None = None, overrides: dict[str, Any] | None = None,
                  parent_run_id: str | None = None, promote: bool = True) -> dict[str, Any]:
    """Evaluate on the test split; with `promote`, register the model as champion. Returns metrics,
    examples and the model version."""
    cfg, cat = resolve(preset, dataset, overrides)
    heads = require(cat.heads / HEADS_FILE, "train")
    encoder = require(cat.pretrain / ENCODER_FILE, "pretrain")
    with tracking.stage_run(cfg, "evaluate", parent_run_id) as run_id:
        result = evaluate_model(str(cat.features), str(cat.processed), heads, cfg, run_id)
        if promote:
            result["model"] = register_model(cfg, encoder, heads, str(cat.processed), str(cat.features),
                                             str(cat.raw), result["metrics"], run_id)
    return result


if __name__ == "__main__":
    evaluate_flow()
