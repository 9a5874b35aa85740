"""What every flow shares: the config a flow runs with when given none (the demo preset), and the task runner
that spreads the per-shard tasks of ingest and extract (threads, or a Dask or Ray cluster:
`orchestration.task_runner`).

A stage flow module imports only Prefect and the config at the top; what its stage runs (the tasks, and through them
torch, MLflow and the library's stage code) is imported in the flow's body. Loading a flow (a command, a
deployment's worker) then takes Prefect's import alone, and the flow run begins (its first log line) before
the seconds that torch and MLflow take to import."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.env import mm_home
from mmcore.config import OrchestrationConfig, PipelineConfig, load_config

F = TypeVar("F")
FANNED_OUT = ("ingest", "extract")  # stage flows that map a task over shards; the others run one task inline
EXTRAS = {"dask": ("prefect_dask", "prefect-dask"), "ray": ("prefect_ray", "prefect-ray")}


def _extra(kind: str) -> Any:
    module, package = EXTRAS[kind]
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"orchestration.task_runner={kind!r} needs {package}: pip install -e '.[{kind}]' "
                          f"(or choose task_runner 'threads')") from exc


def task_runner(cfg: PipelineConfig | OrchestrationConfig) -> TaskRunner:
    """The task runner `orchestration.task_runner` names: a thread pool in the flow's process, or a Dask or
    Ray cluster (an existing one at its address, else a local one started for the flow run)."""
    orch = cfg.orchestration if isinstance(cfg, PipelineConfig) else cfg
    if orch.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=orch.max_workers or os.cpu_count() or 1)
    if orch.task_runner == "dask":
        prefect_dask = _extra("dask")
        if orch.dask_address:
            return prefect_dask.DaskTaskRunner(address=orch.dask_address)
        spill = mm_home() / "dask"  # worker scratch space: local state, not the system temp folder
        spill.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", str(spill))
        return prefect_dask.DaskTaskRunner(cluster_kwargs={
            "n_workers": orch.n_workers, "processes": True, "threads_per_worker": 1,  # one task per process
            "dashboard_address": None, "local_directory": str(spill)})
    if orch.task_runner == "ray":
        prefect_ray = _extra("ray")
        if orch.ray_address:
            return prefect_ray.RayTaskRunner(address=orch.ray_address)
        return prefect_ray.RayTaskRunner(init_kwargs={"num_cpus": orch.n_workers})
    raise ValueError(f"unknown task_runner {orch.task_runner!r}; valid: threads, dask, ray")


def with_task_runner(flow: F, cfg: PipelineConfig) -> F:
    """`flow` running its tasks on the configured task runner when it fans out per shard (FANNED_OUT);
    other stages unchanged, so they start no cluster they would not use."""
    if flow.name not in FANNED_OUT:  # type: ignore[attr-defined]
        return flow
    return flow.with_options(task_runner=task_runner(cfg))  # type: ignore[attr-defined]


DEFAULT = load_config("demo")  # what a flow runs with when given no config (frozen, so safe to share)
