"""Runs whose process was killed are marked failed (MLflow) and crashed (Prefect) when the next run starts;
runs of live processes and of other hosts are left alone."""

from __future__ import annotations

import socket
import subprocess
import sys

from mmcore import processes
from tasks import crashed


def _dead_process() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:{processes._start_time(child.pid) or '1'}"


def test_a_process_is_alive_only_while_it_runs_with_the_same_start_time():
    me = processes.process_id()
    assert processes.alive(me) is True
    host, pid, started = me.split(":")
    assert processes.alive(f"{host}:{pid}:{int(started) + 1}") is False  # the pid, reused by another process
    assert processes.alive(_dead_process()) is False
    assert processes.alive(f"elsewhere-{host}:{pid}:{started}") is None  # another machine: cannot tell


def test_runs_of_dead_processes_are_failed_and_the_others_kept(harness):
    from mmcore.config import load_config
    from tasks import tracking

    client = tracking.client()
    experiment = tracking.experiment_id("crashed-runs")
    dead = client.create_run(experiment, tags={crashed.TAG: _dead_process()}).info.run_id
    live = client.create_run(experiment, tags={crashed.TAG: processes.process_id()}).info.run_id
    remote = client.create_run(experiment, tags={crashed.TAG: "another-host:12:34"}).info.run_id
    assert crashed.fail_mlflow_runs(client, experiment) == [dead]
    assert client.get_run(dead).info.status == "FAILED" and "is gone" in client.get_run(dead).data.tags["mm.ended"]
    assert {client.get_run(r).info.status for r in (live, remote)} == {"RUNNING"}
    # a new top-level run does this itself
    again = client.create_run(experiment, tags={crashed.TAG: _dead_process()}).info.run_id
    tracking.end_run(tracking.start_run(load_config("smoke", dataset="crashed-runs"), "pipeline"))
    assert client.get_run(again).info.status == "FAILED"


def test_flow_runs_of_dead_processes_are_crashed(harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="crash-me")
    def crash_me() -> None:
        pass

    with get_client(sync_client=True) as prefect:
        dead = prefect.create_flow_run(crash_me, tags=[f"{crashed.PREFECT_TAG}{_dead_process()}"], state=Running())
        live = prefect.create_flow_run(crash_me, tags=[f"{crashed.PREFECT_TAG}{processes.process_id()}"],
                                       state=Running())
        assert str(dead.id) in crashed.crash_flow_runs()
        assert prefect.read_flow_run(dead.id).state.type.value == "CRASHED"
        assert prefect.read_flow_run(live.id).state.type.value == "RUNNING"
