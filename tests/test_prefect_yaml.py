"""prefect.yaml points at real flows, passes each the typed config (`cfg`), and runs the pipeline nightly."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

import flows  # noqa: F401  (the embedded defaults, set before Prefect is imported)
from mmcore.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_entrypoint_is_a_flow_and_every_stage_is_deployed():
    from prefect import Flow

    names = set()
    for dep in _deployments():
        path, _, attr = dep["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, attr), Flow), dep["entrypoint"]
        names.add(getattr(module, attr).name)
        assert dep["work_pool"]["name"] == "local"
    assert names == {"pipeline", "ingest", "pretrain", "extract", "train", "evaluate", "batch-predict"}


def test_pipeline_runs_nightly_and_parameters_match_the_flow_signature():
    from prefect.client.schemas.schedules import CronSchedule

    nightly = next(d for d in _deployments() if d["name"] == "nightly")
    schedule = CronSchedule(**nightly["schedules"][0])  # raises on an invalid cron string
    assert schedule.cron.split()[2:] == ["*", "*", "*"]  # every day
    for dep in _deployments():
        path, _, attr = dep["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        if flow.name == "batch-predict":
            continue
        assert dep["parameters"] == {"cfg": {"preset": "demo"}}, dep["name"]
        assert set(dep["parameters"]) <= set(flow.parameters.properties)
        # Prefect validates the parameters into the flow's typed config: the demo preset, resolved
        assert flow.validate_parameters(dep["parameters"])["cfg"] == load_config("demo"), dep["name"]


def test_a_run_config_is_the_preset_with_the_fields_given_beside_it():
    from flows.pipeline import pipeline_flow

    cfg = pipeline_flow.validate_parameters({"cfg": {"preset": "smoke", "data_root": "/data",
                                                     "pretrain": {"epochs": 1}}})["cfg"]
    assert cfg == load_config("smoke", {"data_root": "/data", "pretrain.epochs": 1})
    assert (cfg.preset, cfg.dataset, cfg.pretrain.epochs, cfg.pretrain.batch_size) == (None, "smoke", 1, 32)


def test_a_drop_folder_is_scored_on_a_schedule():
    from prefect.client.schemas.schedules import IntervalSchedule

    from flows.predict import batch_predict_flow

    inbox = next(d for d in _deployments() if d["name"] == "score-inbox")
    assert IntervalSchedule(**inbox["schedules"][0]).interval.total_seconds() == 600
    params = batch_predict_flow.validate_parameters(inbox["parameters"])
    assert (params["input"], params["task"]) == ("data/inbox", "caption") and params["out"].endswith(".parquet")
    assert (ROOT / params["input"]).is_dir()  # in the checkout, so the first scheduled run finds it
