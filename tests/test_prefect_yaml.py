"""prefect.yaml points at real flows, with a nightly schedule for the pipeline."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parent.parent


def _deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_entrypoint_is_a_flow_and_every_stage_is_deployed():
    names = set()
    for dep in _deployments():
        path, _, attr = dep["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, attr), Flow), dep["entrypoint"]
        names.add(getattr(module, attr).name)
        assert dep["work_pool"]["name"] == "local"
    assert names == {"pipeline", "ingest", "pretrain", "extract", "train", "evaluate"}


def test_pipeline_runs_nightly_and_parameters_match_the_flow_signature():
    from prefect.client.schemas.schedules import CronSchedule

    nightly = next(d for d in _deployments() if d["name"] == "nightly")
    schedule = CronSchedule(**nightly["schedules"][0])  # raises on an invalid cron string
    assert schedule.cron.split()[2:] == ["*", "*", "*"]  # every day
    for dep in _deployments():
        path, _, attr = dep["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        assert set(dep.get("parameters", {})) <= set(flow.parameters.properties)
