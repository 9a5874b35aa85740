"""The pipeline against a real MLflow tracking server whose artifacts live in S3, and the champion it
registers served over HTTP; all on 127.0.0.1.

One tiny pipeline run (module-scoped) against `mlflow server --artifacts-destination s3://...` backed
by a moto S3 server. The client (this process) has no S3 credentials: artifacts go through the
server's proxy. Then `mlflow models serve` loads `models:/mmcore-smoke@champion` through the same
server, and bench/screenshot_mlflow.py takes a picture of the runs from the server's SQLite store.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.servers import AWS_VARS, aws_vars, free_port, moto_server, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
BUCKET = "mm-mlflow"
MODEL = "mmcore-smoke"
STAGES = ["evaluate", "extract", "ingest", "pretrain", "train"]
CLIENT_ONLY = (*AWS_VARS, "MLFLOW_S3_ENDPOINT_URL")  # none of these reach the client: it has no S3 access


def _without_s3(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in CLIENT_ONLY}


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """moto with an empty bucket, and `mlflow server` storing artifacts in it (proxied to clients)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        port = free_port()
        db = tmp / "mlflow.db"
        env = {**_without_s3(dict(os.environ)), **aws_vars(endpoint), "MLFLOW_S3_ENDPOINT_URL": endpoint}
        cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", f"s3://{BUCKET}/mlflow"]
        with serving(cmd, f"http://127.0.0.1:{port}/health", tmp / "server.log", env=env, timeout=180,
                     cwd=tmp) as proc:
            print(f"\nmlflow server healthy after {proc.startup_s:.1f} s")
            yield {"url": f"http://127.0.0.1:{port}", "db": db, "s3": s3}


@pytest.fixture(scope="module")
def run(harness, tracking_server: dict, tmp_path_factory: pytest.TempPathFactory):
    """One tiny pipeline run tracked on the server; the module's tests see MLFLOW_TRACKING_URI pointing at it."""
    from flows.pipeline import pipeline_flow
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes

    data_root = tmp_path_factory.mktemp("server-data")
    generate_shapes(data_root / "raw" / "smoke", 60, seed=4, image_size=32)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLIENT_ONLY:
            mp.delenv(var, raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_server["url"])  # MM_ARTIFACT_ROOT stays set: ignored over http
        started = time.monotonic()
        result = pipeline_flow(load_config("smoke", {"data_root": str(data_root), "pretrain.epochs": 1,
                                                     "heads.epochs": 1}))
        print(f"\npipeline against the server: {time.monotonic() - started:.1f} s")
        yield {**tracking_server, "result": result, "data_root": data_root}


def _client(run: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=run["url"])


def test_parent_and_stage_runs_with_metrics_are_on_the_server(run: dict):
    client = _client(run)
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's proxy, not a local folder
    parent = client.get_run(run["result"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "pipeline"
    assert "t2i_r1" in parent.data.metrics and "vqa_acc" in parent.data.metrics
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["stage"] for r in children) == STAGES
    for child in children:
        assert child.info.status == "FINISHED" and child.data.metrics, child.data.tags["stage"]
        assert child.data.params["pretrain.epochs"] == "1"
    pretrain = next(r for r in children if r.data.tags["stage"] == "pretrain")
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "train_loss")] == [0]


def test_champion_alias_resolves_on_the_server(run: dict):
    version = _client(run).get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == run["result"]["model"]["version"]
    assert version.status == "READY"


def _bucket_keys(run: dict, prefix: str) -> set[str]:
    pages = run["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_model_and_checkpoint_artifacts_are_objects_in_the_bucket(run: dict):
    client = _client(run)
    version = client.get_model_version_by_alias(MODEL, "champion")
    location = version.source  # models:/<model id> for a logged model (MLflow 3), else an artifact URI
    if location.startswith("models:/"):
        location = client.get_logged_model(location.removeprefix("models:/")).artifact_location
    assert location.startswith("mlflow-artifacts:/")
    prefix = "mlflow/" + location.removeprefix("mlflow-artifacts:/").strip("/")
    keys = _bucket_keys(run, prefix)
    names = {k.removeprefix(prefix + "/") for k in keys}
    assert {"MLmodel", "requirements.txt", "input_example.json", "pyfunc_model.py"} <= names, sorted(names)
    assert {"artifacts/bundle/encoder.pt", "artifacts/bundle/heads.pt"} <= names, sorted(names)

    exp = client.get_experiment_by_name("smoke")
    pretrain = client.search_runs([exp.experiment_id], "tags.stage = 'pretrain'")[0]
    assert f"mlflow/{exp.experiment_id}/{pretrain.info.run_id}/artifacts/checkpoints/encoder.pt" in \
        _bucket_keys(run, f"mlflow/{exp.experiment_id}/{pretrain.info.run_id}/")


def test_champion_loads_through_the_server_and_answers_search(run: dict):
    import mlflow.pyfunc
    import pandas as pd

    assert not any(var in os.environ for var in CLIENT_ONLY)  # artifacts come through the server
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(pd.DataFrame([{"task": "search", "text": "a small red circle"}]), params={"k": 4})
    matches = json.loads(out["matches"][0])
    assert len(matches) == 4 and out["answer"][0] == matches[0]["image_path"]
    assert (run["data_root"] / "raw" / "smoke" / matches[0]["image_path"]).is_file()


# Serving over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(run: dict, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow models serve` for the champion, fetched through the tracking server; yields its URL."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    # `mlflow models serve` execs `uvicorn` from PATH: the venv's bin folder must be on it (as when activated).
    env = {**_without_s3(dict(os.environ)), "MLFLOW_TRACKING_URI": run["url"],
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [MLFLOW, "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, f"http://127.0.0.1:{port}/ping", tmp / "serve.log", env=env, timeout=240, cwd=ROOT) as proc:
        print(f"\nmlflow models serve answered /ping after {proc.startup_s:.1f} s")
        yield f"http://127.0.0.1:{port}"


def _invoke(url: str, rows: list[dict], params: dict | None = None) -> tuple[int, dict]:
    columns = ["task", "image", "question", "text", "lang"]
    body = {"dataframe_split": {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}}
    if params:
        body["params"] = params
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_champion_answers_caption_ask_and_search(run: dict, served: str):
    image = base64.b64encode((run["data_root"] / "raw/smoke/images/000000.png").read_bytes()).decode()
    status, body = _invoke(served, [
        {"task": "caption", "image": image},
        {"task": "ask", "image": image, "question": "how many shapes are there?"},
        {"task": "search", "text": "a large blue square"},
    ], params={"k": 3})
    assert status == 200, body
    caption, ask, search = body["predictions"]
    records = [json.loads(line) for line in
               (run["data_root"] / "raw/smoke/annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    words = {w for r in records for c in r["captions"]["en"] for w in re.findall(r"[a-z]+", c)}
    said = re.findall(r"[a-z]+", caption["answer"])
    assert said and set(said) <= words  # made of the words of the captions it learned from
    answers = {qa["answer"] for r in records for qa in r["qa"]}
    assert ask["answer"] in answers and 0.0 < ask["score"] <= 1.0  # one of the answers it was trained on
    matches = json.loads(search["matches"])
    assert len(matches) == 3 and search["answer"] == matches[0]["image_path"]
    assert all(m["image_path"].startswith("images/") for m in matches)


def test_served_champion_rejects_an_unknown_task_by_name(served: str):
    status, body = _invoke(served, [{"task": "summarize", "text": "two shapes"}])
    assert status == 400, body  # a client error, whose message says what was wrong
    assert "unknown task" in body["message"] and "summarize" in body["message"], body


# A look at the runs --------------------------------------------------------------------------------------------


def test_screenshot_script_shows_the_experiment(run: dict, tmp_path: Path):
    from PIL import Image

    from bench.screenshot_mlflow import BROWSERS

    if not any(shutil.which(b) for b in BROWSERS):
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome): apt-get install chromium")
    out = tmp_path / "runs.png"
    started = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "screenshot_mlflow.py"), "--tracking-uri",
                          f"sqlite:///{run['db']}", "--experiment", "smoke", "--out", str(out)],
                         cwd=tmp_path, env=_without_s3(dict(os.environ)), capture_output=True, text=True, timeout=300)
    print(f"\nscreenshot script: {time.monotonic() - started:.1f} s\n{res.stdout}")
    assert res.returncode == 0, res.stdout + res.stderr
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 600
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # a rendered page, not a blank single colour
