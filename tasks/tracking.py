"""MLflow bookkeeping for the flows: experiments, parent/child runs, params, metrics, artifacts.

Everything goes through `MlflowClient` with explicit run ids rather than MLflow's thread-local
"active run", because Prefect may run tasks in worker threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mmcore.config import PipelineConfig
from mmcore.processes import process_id
from mmcore.progress import Progress
from mmcore.stages.hooks import Hooks
from tasks import crashed, store

_MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def client() -> MlflowClient:
    """A client of the tracking store; the first one in a process makes sure the store exists (tasks/store.py)."""
    store.ensure()
    return MlflowClient()


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created on first use (artifacts under MM_ARTIFACT_ROOT when local)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    root = os.environ.get("MM_ARTIFACT_ROOT")
    if root and not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks")):
        location = f"{root.rstrip('/')}/{name}"
    try:
        # Labels the experiment as model training (not GenAI) for the MLflow UI's experiment-kind setting.
        return c.create_experiment(name, artifact_location=location,
                                   tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
        return c.get_experiment_by_name(name).experiment_id


def git_tags() -> dict[str, str]:
    """Commit and dirty flag of the code that runs, when it runs from a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()}


def _prefect_tags() -> dict[str, str]:
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    return {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": str(flow_run.name)}


def start_run(cfg: PipelineConfig, stage: str, parent_run_id: str | None = None) -> str:
    """Creates a run for a stage (or the whole pipeline) with the resolved config as params.

    The run is named `<stage>-<Prefect flow run name>`, so the two UIs point at each other by name too.
    """
    run_id = _create_run(cfg.dataset, stage, cfg.flat(), {}, parent_run_id)
    client().log_dict(run_id, cfg.model_dump(mode="json"), "config.json")
    return run_id


def _create_run(dataset: str, stage: str, params: dict[str, Any], extra_tags: dict[str, str],
                parent_run_id: str | None = None, source: str | None = None) -> str:
    """A run of `stage` in experiment `dataset`, named and tagged as every run is, with `params`."""
    prefect = _prefect_tags()
    name = f"{stage}-{prefect['prefect.flow_run_name']}" if prefect else stage
    tags = {MLFLOW_RUN_NAME: name, "stage": stage, "dataset": dataset,
            "mlflow.source.name": source or f"flows/{stage}.py", "mlflow.source.type": "JOB",
            crashed.TAG: process_id(), **git_tags(), **prefect, **extra_tags}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    c = client()
    experiment = experiment_id(dataset)
    if not parent_run_id:  # a new run: end those that a killed process left running
        crashed.fail_mlflow_runs(c, experiment)
        if prefect:
            crashed.crash_flow_runs()
    run = c.create_run(experiment, tags=tags, run_name=name)
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 90):  # MLflow takes at most 100 params per batch
        c.log_batch(run.info.run_id, params=items[i : i + 90])
    if prefect:
        _tag_flow_run(prefect["prefect.flow_run_id"], run.info.run_id, run.info.experiment_id)
    return run.info.run_id


def _tag_flow_run(flow_run_id: str, run_id: str, experiment_id: str) -> None:
    """The other direction of the link: the Prefect flow run gets tags naming its MLflow run."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        current = prefect.read_flow_run(flow_run_id).tags
        prefect.update_flow_run(flow_run_id, tags=[*current, f"mlflow-run:{run_id}",
                                                   f"mlflow-experiment:{experiment_id}",
                                                   f"{crashed.PREFECT_TAG}{process_id()}"])


def end_run(run_id: str, failed: bool = False) -> None:
    client().set_terminated(run_id, "FAILED" if failed else "FINISHED")


def stage_run(cfg: PipelineConfig, stage: str, parent_run_id: str | None = None) -> AbstractContextManager[str]:
    """A run that is marked FAILED if the block raises and FINISHED otherwise."""
    return _ended(start_run(cfg, stage, parent_run_id))


def job_run(dataset: str, stage: str, params: dict[str, Any], tags: dict[str, str]) -> AbstractContextManager[str]:
    """A run of a job that is not a pipeline stage (batch inference), with its own params: FAILED if the
    block raises, FINISHED otherwise."""
    return _ended(_create_run(dataset, stage, params, tags, source="flows/predict.py"))


@contextmanager
def _ended(run_id: str) -> Iterator[str]:
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        end_run(run_id, failed)


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    for i in range(0, len(items), _MAX_BATCH):
        client().log_batch(run_id, metrics=items[i : i + _MAX_BATCH])


def log_tags(run_id: str, tags: dict[str, Any]) -> None:
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


class StepLogger:
    """A per-batch callback: each batch's loss terms go to MLflow with step = batch index.

    Training must not wait on the store (a SQLite write costs tens of milliseconds, a step on a small
    CPU model not much more), so the metrics are buffered and sent as one queued `log_batch` every
    `every_s` seconds; `flush()` (at the end of the stage) sends the rest and waits for all of them.
    """

    def __init__(self, run_id: str, prefix: str = "step_", every_s: float = 10.0):
        self.run_id, self.prefix, self.every_s = run_id, prefix, every_s
        self.buffer: list[Metric] = []
        self.sent = time.monotonic()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.buffer += [Metric(f"{self.prefix}{k}", float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.sent >= self.every_s or len(self.buffer) >= _MAX_BATCH:
            self._send()

    def _send(self) -> None:
        while self.buffer:
            part, self.buffer = self.buffer[:_MAX_BATCH], self.buffer[_MAX_BATCH:]
            client().log_batch(self.run_id, metrics=part, synchronous=False)
        self.sent = time.monotonic()

    def flush(self) -> None:
        self._send()
        mlflow.flush_async_logging()


class RunHooks(Hooks):
    """A stage's reports to the Prefect run log and the MLflow run `run_id`.

    Epoch metrics go to MLflow with step = epoch, prefixed with the model's name ("vqa_train_loss"), and
    to the log with progress: epochs done, the rate (samples/s when known) and the time left.
    """

    def __init__(self, run_id: str | None = None):
        from prefect.logging import get_run_logger

        self.run_id, self.logger = run_id, get_run_logger()
        self.steps = StepLogger(run_id) if run_id else None
        self.created = time.monotonic()
        self.started: dict[str, float] = {}  # model -> when its training started
        self.first: dict[str, int] = {}  # model -> the first epoch this process ran (later than 0 after a resume)

    def epoch_callback(self, part: str, epochs: int, items: int | None = None) -> Callable[[int, dict], None]:
        self.started[part] = time.monotonic()
        return super().epoch_callback(part, epochs, items)

    def log(self, message: str) -> None:
        self.logger.info("%s", message)

    def epoch(self, part: str, epoch: int, epochs: int, metrics: dict[str, float], items: int | None = None) -> None:
        prefix = f"{part}_" if part else ""
        if self.run_id:
            log_metrics(self.run_id, {f"{prefix}{k}": v for k, v in metrics.items()}, step=epoch)
        first, started = self.first.setdefault(part, epoch), self.started.get(part, self.created)
        line = Progress(epochs - first, "epochs", started=started).update(epoch + 1 - first)
        if items:
            line += f", {items * (epoch + 1 - first) / max(time.monotonic() - started, 1e-9):.0f} samples/s"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr")
        self.logger.info("%sepoch %d/%d: %s [%s]", prefix, epoch + 1, epochs, shown, line)

    def step(self, part: str, step: int, metrics: dict[str, float]) -> None:
        if self.steps is not None:
            self.steps(step, metrics)

    def flush(self) -> None:
        if self.steps is not None:
            self.steps.flush()


def log_dataset(run_id: str, name: str, path: str | Path, digest: str, context: str) -> None:
    """Records a dataset the run consumed (lineage): its location and content digest, not its data."""
    uri = Path(path).resolve().as_uri() if "://" not in str(path) else str(path)
    dataset = Dataset(name=name, digest=digest[:36], source_type="local" if uri.startswith("file:") else "uri",
                      source=json.dumps({"uri": uri}))
    client().log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, str(path), artifact_path)


def log_dict(run_id: str, data: Any, name: str) -> None:
    client().log_dict(run_id, data, name)


def log_table(run_id: str, table: Any, name: str) -> None:
    """Logs a pyarrow table as a Parquet artifact (e.g. the rejects list, which can be long)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        pq.write_table(table, path)
        client().log_artifact(run_id, str(path))
