"""The whole pipeline: ingest -> pretrain -> extract -> train -> evaluate/register.

Run: `mm pipeline --preset demo`, `python -m flows.pipeline`, or the nightly deployment in prefect.yaml.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import resolve, with_task_runner
from flows.evaluate import evaluate_flow
from flows.extract import extract_flow
from flows.ingest import ingest_flow
from flows.pretrain import pretrain_flow
from flows.train import train_flow
from tasks import tracking
from tasks.caching import check_refresh


@flow(name="pipeline")
def pipeline_flow(preset: str = "demo", dataset: str | None = None,
                  overrides: dict[str, Any] | None = None, refresh: list[str] | None = None) -> dict[str, Any]:
    """Run every stage under one MLflow parent run; returns the evaluation result.

    Stages whose inputs, config and code are unchanged since an earlier run come from Prefect's cache and
    do no model work. `refresh` names stages to run anyway (pretrain, extract, train, evaluate, or all).
    """
    cfg, _ = resolve(preset, dataset, overrides)
    fresh = set(check_refresh(refresh or []))
    with tracking.stage_run(cfg, "pipeline") as parent:
        stage = {"preset": preset, "dataset": dataset, "overrides": overrides, "parent_run_id": parent}
        # ingest and extract fan out per shard, on orchestration.task_runner
        with_task_runner(ingest_flow, cfg)(**stage)
        pretrain_flow(**stage, refresh="pretrain" in fresh)
        with_task_runner(extract_flow, cfg)(**stage, refresh="extract" in fresh)
        train_flow(**stage, refresh="train" in fresh)
        result = evaluate_flow(**stage, refresh="evaluate" in fresh)
        tracking.log_metrics(parent, result["metrics"])
    result["run_id"] = parent
    return result


if __name__ == "__main__":
    pipeline_flow()
