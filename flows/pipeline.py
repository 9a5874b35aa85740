"""The whole pipeline: ingest -> pretrain -> extract -> train -> evaluate/register.

Run: `mm pipeline --preset demo`, `python -m flows.pipeline`, or the nightly deployment in prefect.yaml.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import resolve
from flows.evaluate import evaluate_flow
from flows.extract import extract_flow
from flows.ingest import ingest_flow
from flows.pretrain import pretrain_flow
from flows.train import train_flow
from tasks import tracking


@flow(name="pipeline")
def pipeline_flow(preset: str = "demo", dataset: str | None = None,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every stage under one MLflow parent run; returns the evaluation result."""
    cfg, _ = resolve(preset, dataset, overrides)
    with tracking.stage_run(cfg, "pipeline") as parent:
        stage = {"preset": preset, "dataset": dataset, "overrides": overrides, "parent_run_id": parent}
        ingest_flow(**stage)
        pretrain_flow(**stage)
        extract_flow(**stage)
        train_flow(**stage)
        result = evaluate_flow(**stage)
        tracking.log_metrics(parent, result["metrics"])
    result["run_id"] = parent
    return result


if __name__ == "__main__":
    pipeline_flow()
