"""`mm predict` and the batch-predict flow against a real MLflow registry: one row per input from a drop folder
of good and bad images, the MLflow run linked to the model version it used, the search index extended by new
images as a new version of the model, and bad options refused in one line before any server starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmcore.serving import Limits
from tests.mmcore.test_batch import BAD, GOOD
from tests.mmcore.test_serving import full_bundle

LIMITS = Limits(max_rows=64, max_text_chars=60, max_image_bytes=200_000, max_image_pixels=1_000_000, max_k=3)


def _mm(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def registered(harness, tiny_bundle, tmp_path_factory) -> str:
    """The tiny model (every head) registered as version 1 of mmcore-batch, @champion."""
    from mmcore.config import load_config
    from tasks import tracking
    from tasks.register import register_bundle

    cfg = load_config("smoke", {}, dataset="batch")
    bundle = full_bundle(tiny_bundle, tmp_path_factory.mktemp("batch-registered"), LIMITS)
    metrics = {"t2i_r1": 0.3, "t2i_r1_baseline": 0.01}
    with tracking.stage_run(cfg, "evaluate") as run_id:
        tracking.log_metrics(run_id, metrics)
        model = register_bundle(cfg, bundle, metrics, run_id, "split-a", "d" * 64)
    assert (model["version"], model["alias"]) == ("1", "champion")
    return "batch"


@pytest.fixture
def inbox(tmp_path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    for name, data in GOOD.items():
        (root / name).write_bytes(data)
    for name, (data, _) in BAD.items():
        (root / name).write_bytes(data)
    return root


def test_predict_over_a_folder_writes_one_row_per_image_in_a_run_linked_to_the_model(registered, inbox, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    out = tmp_path / "captions.parquet"
    res = _mm("predict", "--input", str(inbox), "--task", "caption", "--out", str(out), "--dataset", registered,
              "--shard-rows", "4")
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted([*GOOD, *BAD])
    assert {r["id"]: r["reason"] for r in rows if r["status"] == "rejected"} == {n: why for n, (_, why) in BAD.items()}
    assert all(r["answer"] for r in rows if r["status"] == "ok")
    client = MlflowClient()
    version = client.get_model_version("mmcore-batch", "1")
    assert {r["model_version"] for r in rows} == {"1"}
    assert {r["model_digest"] for r in rows} == {version.tags.get("model_digest") or rows[0]["model_digest"]}
    run_id = res.output.split("MLflow run ")[1].split(")")[0]
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["stage"], run.data.tags["model_version"]) == ("FINISHED", "predict", "1")
    assert run.data.metrics["rows_in"] == len(GOOD) + len(BAD) and run.data.metrics["rows_rejected"] == len(BAD)
    logged = mlflow.models.get_model_info("models:/mmcore-batch/1").model_id
    assert logged and [m.model_id for m in run.inputs.model_inputs] == [logged]  # lineage: the version it used
    assert run.inputs.dataset_inputs[0].dataset.name == "predict-input"
    assert f"{len(GOOD) + len(BAD)}" in res.output and "rejected by reason" in res.output


def test_new_images_join_the_search_index_as_a_new_version(registered, inbox, tmp_path):
    import json

    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from mlflow.tracking import MlflowClient

    from mmcore.data.shards import vectors_to_numpy
    from mmcore.serving import load_predictor

    out = tmp_path / "embedded.parquet"
    res = _mm("predict", "--input", str(inbox), "--task", "embed", "--out", str(out), "--dataset", registered,
              "--add-to-index")
    assert res.exit_code == 0, res.output
    client = MlflowClient()
    newest = client.get_model_version_by_alias("mmcore-batch", "champion")
    assert newest.version != "1" and newest.tags["index_extends"] == "1"
    assert f"version {newest.version} as @champion" in res.output
    local = Path(mlflow.artifacts.download_artifacts(f"models:/mmcore-batch/{newest.version}",
                                                     dst_path=str(tmp_path / "v")))
    index = pq.read_table(next(local.rglob("index.parquet")))
    embedded = pq.read_table(out).to_pylist()
    ok = {r["id"]: r for r in embedded if r["status"] == "ok"}
    added = {sid: (path, vec) for sid, path, vec in zip(index["sample_id"].to_pylist(), index["image_path"].to_pylist(),
                                                         vectors_to_numpy(index["image_embedding"]), strict=True)
             if sid in ok}
    assert sorted(added) == sorted(GOOD) and index.num_rows == 5 + len(GOOD)  # the 5 it had, and the good ones
    for sid, (path, vec) in added.items():
        assert path == str(inbox / sid)  # a search result names the file itself
        np.testing.assert_array_equal(vec, np.frombuffer(ok[sid]["embedding"], "<f4"))

    # the served champion searches the extended index: its results are the nearest of all 15 images
    served = mlflow.pyfunc.load_model("models:/mmcore-batch@champion").predict(
        pd.DataFrame([{"task": "search", "text": "a red circle"}]), params={"k": 3})
    predictor = load_predictor(next(local.rglob("bundle.json")).parent)
    with torch.no_grad():
        text = predictor.encoder.encode_text(_ids(predictor, "a red circle")).numpy()[0]
    nearest = np.argsort(-(vectors_to_numpy(index["image_embedding"]) @ text), kind="stable")[:3]
    assert [m["image_path"] for m in json.loads(served["matches"][0])] == [
        index["image_path"][int(i)].as_py() for i in nearest]


def _ids(predictor, text: str):
    from mmcore.training.loop import pad_batch

    return pad_batch(predictor.tokenizer.encode([text], predictor.meta["max_text_len"]))


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "tag"], "unknown task 'tag'; batch inference does caption, ask, embed, search"),
    (["--question", "why?"], "--question is for the ask task; task 'caption' takes none"),
    (["--out", "preds.csv"], "--out preds.csv must name a Parquet file (ending in .parquet)"),
    (["--add-to-index"], "--add-to-index needs --task embed"),
    (["--input", "/nonexistent/inbox"], "/nonexistent/inbox does not exist"),
    (["--dataset", "nothing-registered"], "model models:/mmcore-nothing-registered@champion is not in the registry"),
    (["--model", "/nonexistent/model"], "--model /nonexistent/model is not a model folder"),
])
def test_bad_options_are_refused_before_any_server(inbox, tmp_path, args, message):
    base = {"--input": str(inbox), "--out": str(tmp_path / "p.parquet")}
    given = dict(zip(args[::2], args[1::2], strict=True)) if len(args) % 2 == 0 else {}
    res = _mm("predict", *[x for k, v in base.items() if k not in given for x in (k, v)], *args)
    assert isinstance(res.exception, ValueError) and message in str(res.exception), res.output
    assert "Prefect" not in res.output and "\n" not in str(res.exception)


def test_a_bad_option_is_one_line_on_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "predict", "--input",
                           str(tmp_path), "--out", "preds.csv"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert done.stdout.strip() == "error: --out preds.csv must name a Parquet file (ending in .parquet)"
