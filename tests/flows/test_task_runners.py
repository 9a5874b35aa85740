"""Task runners: the task runner each `orchestration.task_runner` builds, and a runner whose extra is missing
says which one to install. The ingest and extract flows on a Dask cluster and on Ray, against a bucket, are
in test_shard_io.py."""

from __future__ import annotations

import sys

import pytest

from mmcore.config import load_config


def test_task_runner_builds_each_kind():
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.common import task_runner

    runner = task_runner(load_config("smoke", {"orchestration.max_workers": 3}))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    from prefect_dask import DaskTaskRunner
    from prefect_ray import RayTaskRunner

    dask = task_runner(load_config("smoke", {"orchestration.task_runner": "dask"}))
    assert isinstance(dask, DaskTaskRunner) and dask.address is None  # a LocalCluster for the flow run
    assert {k: dask.cluster_kwargs[k] for k in ("n_workers", "processes", "threads_per_worker")} == {
        "n_workers": 2, "processes": True, "threads_per_worker": 1}  # one task per worker process
    remote = task_runner(load_config("smoke", {"orchestration.task_runner": "dask",
                                               "orchestration.dask_address": "tcp://127.0.0.1:8786"}))
    assert remote.address == "tcp://127.0.0.1:8786"
    ray = task_runner(load_config("smoke", {"orchestration.task_runner": "ray", "orchestration.n_workers": 3}))
    assert isinstance(ray, RayTaskRunner) and ray.init_kwargs["num_cpus"] == 3
    remote = task_runner(load_config("smoke", {"orchestration.task_runner": "ray",
                                               "orchestration.ray_address": "ray://10.0.0.5:10001"}))
    assert remote.address == "ray://10.0.0.5:10001"
    with pytest.raises(ValueError, match="threads.*dask.*ray"):
        load_config("smoke", {"orchestration.task_runner": "spark"})


@pytest.mark.parametrize("kind", ["dask", "ray"])
def test_a_runner_without_its_extra_names_the_extra(kind: str, monkeypatch: pytest.MonkeyPatch):
    from flows.common import task_runner

    monkeypatch.setitem(sys.modules, f"prefect_{kind}", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=rf"prefect-{kind}: pip install -e '\.\[{kind}\]'"):
        task_runner(load_config("smoke", {"orchestration.task_runner": kind}))
