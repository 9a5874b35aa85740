"""prefect.yaml against a real Prefect server: `prefect deploy --all`, then a process worker runs the
nightly pipeline deployment on a tiny dataset and the run lands in MLflow with a champion model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture()
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MM_HOME": str(tmp_path / "mm")}
    env.pop("MLFLOW_TRACKING_URI", None)
    with serving([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 f"http://127.0.0.1:{port}/api/health", tmp_path / "server.log", env=env):
        yield env


def _prefect(env: dict, *args: str, timeout: float = 120) -> str:
    res = subprocess.run([PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_deploy_all_and_a_worker_runs_the_nightly_pipeline(server, tmp_path):
    from mlflow.tracking import MlflowClient

    from mmcore.data.synth import generate_shapes

    env = server
    _prefect(env, "work-pool", "create", "local", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    nightly = json.loads(_prefect(env, "deployment", "inspect", "pipeline/nightly", "--output", "json"))
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert nightly["parameters"] == {"cfg": {"preset": "demo"}}  # the whole config, as one typed parameter
    assert nightly["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)
    listed = _prefect(env, "deployment", "ls")
    for name in ("ingest", "pretrain", "extract", "train", "evaluate"):
        assert f"{name}/{name}" in listed

    generate_shapes(tmp_path / "data" / "raw" / "smoke", 60, seed=2, image_size=32)
    cfg = json.dumps({"preset": "smoke", "data_root": str(tmp_path / "data"), "pretrain": {"epochs": 1},
                      "heads": {"epochs": 1}})
    _prefect(env, "deployment", "run", "pipeline/nightly", "--param", f"cfg={cfg}")
    _prefect(env, "worker", "start", "--pool", "local", "--run-once", timeout=480)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mm' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'pipeline'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert 0.0 <= runs[0].data.metrics["vqa_acc"] <= 1.0
    params = runs[0].data.params  # the preset, with the fields given beside it on top
    assert (params["pretrain.epochs"], params["heads.epochs"], params["data_root"]) == ("1", "1",
                                                                                        str(tmp_path / "data"))
    assert params["encoder.image_arch"] == "smallcnn" and "preset" not in params
    assert runs[0].data.tags["prefect.flow_run_id"]  # the MLflow run points back at the Prefect run
    assert str(client.get_model_version_by_alias("mmcore-smoke", "champion").version) == "1"
