"""Runs whose process was killed are marked failed when the next run starts.

A process killed with SIGKILL (or by the machine going down) cannot end its runs: its MLflow runs stay
RUNNING, and so do its Prefect flow runs, for good. Every run is tagged with the process that runs it
(`process_id()`: host, pid and the process's start time, so a reused pid is not mistaken for it). When a
new top-level run starts, the runs of this host whose process is gone are marked FAILED in MLflow and
Crashed in Prefect. Runs of other hosts are left alone: from here nobody can tell whether they are alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmcore.processes import alive

if TYPE_CHECKING:  # a stage command reads the tags before it imports MLflow
    from mlflow.tracking import MlflowClient

TAG = "mm.process"  # MLflow run tag
PREFECT_TAG = "mm-process:"  # Prefect flow run tag prefix


def fail_mlflow_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark the RUNNING runs of the experiment whose process died FAILED; returns their ids."""
    failed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        process = run.data.tags.get(TAG)
        if process and alive(process) is False:
            client.set_tag(run.info.run_id, "mm.ended", f"marked failed: its process {process} is gone")
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed


def crash_flow_runs() -> list[str]:
    """Mark the RUNNING Prefect flow runs whose process died Crashed; returns their ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    crashed = []
    with get_client(sync_client=True) as prefect:
        for flow_run in prefect.read_flow_runs(flow_run_filter=running, limit=200):
            process = next((t.removeprefix(PREFECT_TAG) for t in flow_run.tags if t.startswith(PREFECT_TAG)), None)
            if process and alive(process) is False:
                prefect.set_flow_run_state(flow_run.id, Crashed(message=f"its process {process} is gone"),
                                           force=True)
                crashed.append(str(flow_run.id))
    return crashed
