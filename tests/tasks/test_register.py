"""Registration: the fixture's model registered as a pyfunc version and aliased by the champion gate, a
model registered once only, and the gate's aliases against a real MLflow registry (a SQLite store in a
temporary folder) as better and worse versions arrive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_signature_matches_the_serving_columns():
    from mmcore.serving import COLUMNS, INPUTS, PARAMS
    from tasks.register import SIGNATURE

    assert tuple(c.name for c in SIGNATURE.outputs.inputs) == COLUMNS
    assert tuple(c.name for c in SIGNATURE.inputs.inputs) == INPUTS == ("task", "image", "question", "text", "lang")
    assert [(c.name, c.type.name, c.required) for c in SIGNATURE.inputs.inputs if c.required] == [
        ("task", "string", True)]  # the contract: every column holds strings; only task is required
    assert {p.name: p.dtype.name for p in SIGNATURE.params.params} == {n: p.dtype for n, p in PARAMS.items()}
    assert {p.name: p.default for p in SIGNATURE.params.params} == {"k": 5, "temperature": 1.0, "top_k": 0,
                                                                    "top_p": 1.0, "seed": -1}


def test_register_model_registers_the_fixture_once(built, config_at, mlflow_run):
    from mlflow.tracking import MlflowClient

    from mmcore.stages.package import model_digest, split_digest
    from tasks.register import champion_scores, register_model

    cfg = config_at(built.root, **{"registry.model_name": "mmcore-task-test"})
    assert champion_scores(cfg) is None  # nothing registered under that name yet
    metrics = {"t2i_r1": 0.25, "t2i_r1_baseline": 0.1}
    first = register_model.fn(cfg, built.cat, metrics, mlflow_run.id)
    assert {k: first[k] for k in ("name", "version", "alias", "promoted", "registered", "metric", "champion")} == {
        "name": "mmcore-task-test", "version": "1", "alias": "champion", "promoted": True, "registered": True,
        "metric": "t2i_r1", "champion": None}
    client = MlflowClient()
    version = client.get_model_version("mmcore-task-test", "1")
    test_digest = split_digest(built.cat.processed, "test")
    assert version.tags["model_digest"] == model_digest(cfg, built.cat)
    assert (version.tags["test_digest"], version.tags["gate_decision"]) == (test_digest, "promoted")
    assert version.run_id == mlflow_run.id and version.aliases == ["champion"]
    tags = mlflow_run.tags()
    assert (tags["registered_model"], tags["model_version"], tags["model_alias"], tags["gate_decision"]) == (
        "mmcore-task-test", "1", "champion", "promoted")

    again = register_model.fn(cfg, built.cat, metrics, mlflow_run.id)  # the same files: nothing new
    assert (again["version"], again["alias"], again["registered"], again["promoted"]) == ("1", "champion", False,
                                                                                          False)
    assert "already version 1" in again["reason"]
    assert again["champion"] == {"version": "1", "metrics": {}, "test_digest": test_digest}  # its run logged none
    assert mlflow_run.tags()["gate_decision"] == "already_registered"
    assert [str(v.version) for v in client.search_model_versions("name = 'mmcore-task-test'")] == ["1"]


# The gate against a registry of its own -----------------------------------------------------------------


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    import flows  # noqa: F401  (embedded defaults; the variables below win)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MM_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    return tmp_path


def _metrics(t2i_r1: float) -> dict[str, float]:
    return {"t2i_r1": t2i_r1, "t2i_r1_baseline": 0.01, "vqa_acc": 0.5}


def _register(cfg, bundle, t2i_r1: float, digest: str = "split-a") -> dict:
    from tasks import tracking
    from tasks.register import register_bundle

    metrics = _metrics(t2i_r1)
    with tracking.stage_run(cfg, "evaluate") as run_id:
        tracking.log_metrics(run_id, metrics)  # as the evaluate flow does: the gate reads the champion's run metrics
        model = register_bundle(cfg, bundle, metrics, run_id, digest)
    model["run_id"] = run_id
    return model


def test_register_moves_champion_only_for_a_better_model(mlflow_store, tiny_bundle):
    from mlflow.tracking import MlflowClient

    from mmcore.config import load_config
    from tasks.register import champion_scores

    cfg = load_config("smoke", {"registry.margin": 0.01}, dataset="gate")
    client = MlflowClient()

    def alias(name: str) -> str:
        return str(client.get_model_version_by_alias("mmcore-gate", name).version)

    first = _register(cfg, tiny_bundle, 0.30)
    assert (first["version"], first["alias"], first["promoted"], first["champion"]) == ("1", "champion", True, None)
    assert alias("champion") == "1"

    close = _register(cfg, tiny_bundle, 0.305)  # better, but within the margin
    assert (close["alias"], close["promoted"]) == ("challenger", False)
    assert alias("champion") == "1" and alias("challenger") == "2"
    assert close["champion"]["version"] == "1" and close["champion"]["metrics"]["t2i_r1"] == pytest.approx(0.30)
    tags = client.get_model_version("mmcore-gate", "2").tags
    assert tags["test_digest"] == "split-a" and tags["primary_metric"] == "t2i_r1"
    assert tags["primary_metric_value"] == "0.305" and tags["gate_decision"] == "not_promoted"
    run_tags = client.get_run(close["run_id"]).data.tags
    assert run_tags["gate_decision"] == "not_promoted" and "within the margin" in run_tags["gate_reason"]
    assert run_tags["model_alias"] == "challenger"

    better = _register(cfg, tiny_bundle, 0.40)
    assert (better["version"], better["alias"], better["promoted"]) == ("3", "champion", True)
    assert alias("champion") == "3"
    assert "better by 0.1000" in better["reason"]

    other_split = _register(cfg, tiny_bundle, 0.99, digest="split-b")
    assert other_split["alias"] == "challenger" and "different test split" in other_split["reason"]
    assert alias("champion") == "3" and alias("challenger") == "4"
    # the champion the gate compared with, as the report shows it
    assert other_split["champion"] == {"version": "3", "metrics": pytest.approx(_metrics(0.40)),
                                       "test_digest": "split-a"}
    scores = champion_scores(cfg)
    assert (scores.version, scores.test_digest, scores.metrics["t2i_r1"]) == ("3", "split-a", pytest.approx(0.40))



def test_a_version_carries_its_card_config_dataset_digest_and_commit(mlflow_store, tiny_bundle, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from mmcore.config import load_config
    from tasks import tracking

    cfg = load_config("smoke", {}, dataset="card")
    with tracking.stage_run(cfg, "evaluate") as run_id:
        model = register_bundle_with(cfg, tiny_bundle, run_id, dataset_digest="d" * 64)
    client = MlflowClient()
    version = client.get_model_version("mmcore-card", model["version"])
    commit = tracking.git_tags().get("mlflow.source.git.commit", "unknown")
    assert version.tags["dataset_digest"] == "d" * 64 and version.tags["git_commit"] == commit
    card = version.description
    assert card.startswith("# mmcore-card\n") and f"`{'d' * 64}`" in card and commit in card
    assert "| t2i_r1 | 0.3000 | 0.0100 |" in card  # the metric beside its baseline
    assert "- `search`" in card and "- `ask`" in card and "- `caption`" not in card  # what was evaluated
    assert card.rstrip().endswith("Registered as @champion: no @champion yet: the first model becomes @champion.")
    local = Path(mlflow.artifacts.download_artifacts(model["model_uri"], dst_path=str(tmp_path / "model")))
    logged = (local / "artifacts" / "model_card.md").read_text(encoding="utf-8")
    assert card.startswith(logged)  # the same card travels with the model
    meta = mlflow.models.Model.load(str(local / "MLmodel")).metadata
    assert meta["config"] == json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert (local / "code" / "mmcore" / "serving.py").is_file()  # the library travels with it too
    assert not list((local / "code").rglob("__pycache__"))


def register_bundle_with(cfg, bundle, run_id: str, dataset_digest: str) -> dict:
    from tasks import tracking
    from tasks.register import register_bundle

    metrics = _metrics(0.30)
    tracking.log_metrics(run_id, metrics)
    return register_bundle(cfg, bundle, metrics, run_id, "split-a", dataset_digest)
