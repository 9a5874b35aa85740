"""The whole pipeline: ingest -> pretrain -> extract -> train -> evaluate/register.

Run: `mm pipeline --preset demo`, `python -m flows.pipeline`, or the nightly deployment in prefect.yaml.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows.common import DEFAULT, with_task_runner
from flows.evaluate import evaluate_flow
from flows.extract import extract_flow
from flows.ingest import ingest_flow
from flows.pretrain import pretrain_flow
from flows.train import train_flow
from mmcore.config import PipelineConfig

Refresh = Literal["pretrain", "extract", "train", "evaluate", "all"]


@flow(name="pipeline")
def pipeline_flow(cfg: PipelineConfig = DEFAULT, refresh: list[Refresh] | None = None) -> dict[str, Any]:
    """Run every stage under one MLflow parent run; returns the evaluation result with the parent run's id.

    Stages whose inputs, config and code are unchanged since an earlier run come from Prefect's cache and
    do no model work. `refresh` names stages to run anyway (pretrain, extract, train, evaluate, or all).
    """
    from tasks import tracking  # imported as the run starts (flows/common.py)
    from tasks.caching import check_refresh

    fresh = set(check_refresh(refresh or []))
    with tracking.stage_run(cfg, "pipeline") as parent:
        # ingest and extract fan out per shard, on orchestration.task_runner
        with_task_runner(ingest_flow, cfg)(cfg, parent)
        pretrain_flow(cfg, parent, refresh="pretrain" in fresh)
        with_task_runner(extract_flow, cfg)(cfg, parent, refresh="extract" in fresh)
        train_flow(cfg, parent, refresh="train" in fresh)
        result = evaluate_flow(cfg, parent, refresh="evaluate" in fresh)
        tracking.log_metrics(parent, result["metrics"])
    return {**result, "run_id": parent}


if __name__ == "__main__":
    pipeline_flow()
