"""End to end: the pipeline flow on a tiny synthetic dataset with bad records, under a real
(temporary) Prefect API and a real MLflow SQLite store, then inference through the champion alias."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BAD_RECORDS = [
    ('{"id": "bad-missing", "image": "images/does-not-exist.png", "captions": {"en": ["a red circle"]}}',
     "missing_file"),
    ('{"id": "bad-empty", "image": "images/000001.png", "captions": {"en": [""]}}', "empty_text"),
    ('{"id": "bad-decode", "image": "images/broken.png", "captions": {"en": ["a blue square"]}}', "undecodable"),
    ("{not json", "malformed"),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("data")
    raw = root / "raw" / "smoke"
    generate_shapes(raw, 150, seed=1, image_size=32)
    (raw / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with open(raw / "annotations.jsonl", "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line, _ in BAD_RECORDS)
    return root


def _config(data_root: Path, **sets: object):
    from mmcore.config import load_config

    return load_config("smoke", {"data_root": str(data_root), **sets})


@pytest.fixture(scope="module")
def first_run(harness, data_root):
    from flows.pipeline import pipeline_flow

    return pipeline_flow(_config(data_root))


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def test_ingest_wrote_shards_rejects_and_manifest(first_run, data_root):
    from mmcore.catalog import Catalog
    from mmcore.data.dataset import read_manifest
    from mmcore.data.shards import read_tables

    cat = Catalog.from_config(_config(data_root))
    manifest = read_manifest(cat.processed)
    assert manifest["records_in"] == 154
    assert manifest["accepted"] == 150 and manifest["rejected"] == 4
    assert manifest["rejects_by_reason"] == {"empty_text": 1, "malformed": 1, "missing_file": 1, "undecodable": 1}
    assert len(manifest["shards"]) == 4  # 154 lines / 40 per chunk
    rejects = read_tables(cat.processed.listed("rejects")).to_pylist()
    assert sorted(r["reason"] for r in rejects) == sorted(reason for _, reason in BAD_RECORDS)
    assert all(r["message"] for r in rejects)
    assert all((cat.processed.path / s[k]).is_file() for s in manifest["shards"] for k in ("samples", "tokens"))
    features = json.loads(cat.features.manifest.read_text())
    assert features["rows"] == 150 and features["processed_digest"] == manifest["digest"]


def test_mlflow_has_parent_and_stage_runs_with_metrics(first_run):
    client = _client()
    exp = client.get_experiment_by_name("smoke")
    parent = client.get_run(first_run["run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["stage"] for r in children) == ["evaluate", "extract", "ingest", "pretrain", "train"]
    assert all(r.info.status == "FINISHED" for r in children)
    evaluate = next(r for r in children if r.data.tags["stage"] == "evaluate")
    names = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_mean_rank", "vqa_acc",
             "caption_bleu1", "caption_bleu4", "caption_cider_d", "caption_rouge_l", "caption_distinct2",
             "translation_bleu_en_zh", "translation_chrf_en_zh", "translation_bleu_zh_en", "generation_perplexity_en",
             "generation_perplexity_zh", "vqa_acc_question_only", "vqa_acc_image_only"]
    for name in names:
        assert name in evaluate.data.metrics
        assert f"{name}_baseline" in evaluate.data.metrics or name.startswith("vqa_acc_")
        assert name in parent.data.metrics
    assert evaluate.data.metrics["t2i_r1_baseline"] == pytest.approx(1 / evaluate.data.metrics["test_images"])
    pretrain = next(r for r in children if r.data.tags["stage"] == "pretrain")
    assert pretrain.data.params["pretrain.epochs"] == "2"  # the resolved config is logged as params
    history = client.get_metric_history(pretrain.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1]  # per-epoch metrics
    ingest = next(r for r in children if r.data.tags["stage"] == "ingest")
    assert ingest.data.metrics["rejected"] == 4 and ingest.data.tags["dataset_digest"]
    # lineage: each stage records the dataset it consumed, by content digest
    used = {r.data.tags["stage"]: r.inputs.dataset_inputs for r in children}
    assert used["pretrain"][0].dataset.digest == ingest.data.tags["dataset_digest"][:36]
    assert {t.value for t in used["pretrain"][0].tags} == {"train"}
    assert {t.value for i in used["evaluate"] for t in i.tags} == {"test"}
    artifacts = {a.path for a in client.list_artifacts(pretrain.info.run_id, "checkpoints")}
    assert "checkpoints/encoder.pt" in artifacts
    # Prefect and MLflow point at each other: run tags name the flow run, flow-run tags name the run
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        for run in [parent, *children]:
            flow_run = prefect.read_flow_run(run.data.tags["prefect.flow_run_id"])
            assert f"mlflow-run:{run.info.run_id}" in flow_run.tags
            assert run.data.tags["mlflow.runName"].endswith(flow_run.name)


def test_champion_alias_points_at_the_registered_model(first_run):
    version = _client().get_model_version_by_alias("mmcore-smoke", "champion")
    assert str(version.version) == first_run["model"]["version"]


def _caption_words(data_root: Path) -> set[str]:
    """Every word of the English training captions: all a caption can be made of."""
    lines = (data_root / "raw/smoke/annotations.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{\"")]
    return {w for r in records for c in r.get("captions", {}).get("en", []) for w in re.findall(r"[a-z]+", c)}


def test_champion_answers_caption_ask_search_translate_and_generate(first_run, data_root):
    import base64

    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model("models:/mmcore-smoke@champion")
    image = base64.b64encode((data_root / "raw/smoke/images/000000.png").read_bytes()).decode()
    out = model.predict(pd.DataFrame([
        {"task": "caption", "image": image},
        {"task": "ask", "image": image, "question": "how many shapes are there?"},
        {"task": "search", "text": "a small red circle"},
        {"task": "translate", "text": "a small red circle on the left", "lang": "zh"},
        {"task": "generate", "text": "two shapes", "lang": "en"},
        {"task": "generate", "text": "图中有", "lang": "zh"},
    ]), params={"k": 3, "seed": 7, "top_p": 0.9})
    assert len(out) == 6
    caption = re.findall(r"[a-z]+", out["answer"][0])
    assert caption and set(caption) <= _caption_words(data_root)  # words the captions it learned from use
    assert 0.0 < out["score"][1] <= 1.0
    matches = json.loads(out["matches"][2])
    assert len(matches) == 3 and (data_root / "raw/smoke" / matches[0]["image_path"]).is_file()
    assert out["answer"][3] and all("a" > ch or ch > "z" for ch in out["answer"][3])  # Chinese, no Latin letters
    assert out["answer"][4].startswith("two shapes") and out["answer"][5].startswith("图中有")
    again = model.predict(pd.DataFrame([{"task": "generate", "text": "two shapes", "lang": "en"}]),
                          params={"seed": 7, "top_p": 0.9})
    assert again["answer"][0] == out["answer"][4]  # a seed makes sampling repeatable
    with pytest.raises(Exception, match="unknown task"):
        model.predict(pd.DataFrame([{"task": "summarize", "text": "x"}]))
    with pytest.raises(Exception, match="unknown language"):
        model.predict(pd.DataFrame([{"task": "translate", "text": "x", "lang": "fr"}]))


def test_cli_uses_the_champion(first_run, data_root):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    image = str(data_root / "raw/smoke/images/000000.png")
    res = runner.invoke(app, ["ask", image, "how many shapes are there?", "--dataset", "smoke"])
    assert res.exit_code == 0, res.output
    assert "p=" in res.output
    res = runner.invoke(app, ["search", "a large blue square", "-k", "2", "--dataset", "smoke"])
    assert res.exit_code == 0 and res.output.count("images/") == 2, res.output
    res = runner.invoke(app, ["translate", "a large blue square", "--to", "zh", "--dataset", "smoke"])
    assert res.exit_code == 0 and res.output.strip(), res.output
    assert all("a" > ch or ch > "z" for ch in res.output.strip()), res.output  # Chinese, no Latin letters
    res = runner.invoke(app, ["generate", "one shape", "-n", "2", "--seed", "1", "--dataset", "smoke"])
    assert res.exit_code == 0 and res.output.count("one shape") == 2, res.output
    res = runner.invoke(app, ["caption", image, "--dataset", "nothing-registered"])
    assert res.exit_code == 1 and "mm demo" in res.output


def test_rerun_comes_from_the_cache_and_registers_nothing(first_run, data_root):
    import os

    from flows.pipeline import pipeline_flow

    tokenizer = next(data_root.glob("processed/smoke/*/tokenizer.json"))
    before = os.stat(tokenizer).st_mtime_ns
    second = pipeline_flow(_config(data_root))
    assert os.stat(tokenizer).st_mtime_ns == before  # nothing changed, so not trained again
    client = _client()
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{second['run_id']}'")
    tags = {r.data.tags["stage"]: r.data.tags for r in runs}
    assert all(tags[s]["cached"] == "true" for s in ("pretrain", "extract", "train", "evaluate")), tags
    evaluate = next(r for r in runs if r.data.tags["stage"] == "evaluate")
    assert evaluate.data.metrics["t2i_r1"] == pytest.approx(first_run["metrics"]["t2i_r1"])  # logged from the cache
    assert second["metrics"]["t2i_r1"] == pytest.approx(first_run["metrics"]["t2i_r1"])
    # the same model files: no new version, the champion stays where it was
    assert second["model"]["version"] == first_run["model"]["version"] and not second["model"]["registered"]
    assert tags["evaluate"]["gate_decision"] == "already_registered"
    assert str(client.get_model_version_by_alias("mmcore-smoke", "champion").version) == first_run["model"]["version"]


def test_changed_heads_are_a_challenger_that_does_not_beat_the_champion(first_run, data_root):
    from flows.pipeline import pipeline_flow

    # one head epoch instead of two: train reruns (the upstream stages come from the cache), and the new
    # model is registered; a margin of 1.0 on the primary metric cannot be beaten, so it is @challenger
    changed = pipeline_flow(_config(data_root, **{"heads.epochs": 1, "registry.margin": 1.0}))
    client = _client()
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{changed['run_id']}'")
    tags = {r.data.tags["stage"]: r.data.tags for r in runs}
    assert tags["pretrain"]["cached"] == "true" and tags["extract"]["cached"] == "true"
    assert tags["train"]["cached"] == "false" and tags["evaluate"]["cached"] == "false"
    assert int(changed["model"]["version"]) > int(first_run["model"]["version"])
    assert changed["model"]["alias"] == "challenger" and not changed["model"]["promoted"]
    assert str(client.get_model_version_by_alias("mmcore-smoke", "challenger").version) == changed["model"]["version"]
    assert str(client.get_model_version_by_alias("mmcore-smoke", "champion").version) == first_run["model"]["version"]


def test_refresh_retrains_a_stage_and_rejects_unknown_names(first_run, data_root):
    import os

    from prefect.exceptions import ParameterTypeError

    from flows.pipeline import pipeline_flow
    from mmcore.catalog import Catalog

    checkpoint = Catalog.from_config(_config(data_root)).pretrain.checkpoint
    before = os.stat(checkpoint).st_mtime_ns
    again = pipeline_flow(_config(data_root), refresh=["pretrain"])
    client = _client()
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{again['run_id']}'")
    pretrain = next(r for r in runs if r.data.tags["stage"] == "pretrain")
    assert pretrain.data.tags["cached"] == "false"
    assert pretrain.data.metrics["resumed_from_epoch"] == 0  # trained from scratch, not resumed from the file
    assert os.stat(checkpoint).st_mtime_ns != before
    # the flow's typed parameter names the valid stages
    with pytest.raises(ParameterTypeError, match="Input should be 'pretrain', 'extract', 'train', 'evaluate' or 'all'"):
        pipeline_flow(_config(data_root), refresh=["pretrian"])


def test_stage_without_its_input_says_which_stage_to_run(harness, tmp_path):
    from flows.train import train_flow

    with pytest.raises(FileNotFoundError, match="run the extract stage first"):
        train_flow(_config(tmp_path))
