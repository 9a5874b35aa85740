"""End to end on data with questions but no captions (like easy-VQA): the encoder is pretrained through
a VQA head (in two torchrun processes), the caption head is left out with its reason, and the VQA
accuracy comes with its blind baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qa_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("data")
    raw = root / "raw" / "qa-only"
    generate_shapes(raw, 120, seed=2, image_size=32)
    records = [json.loads(line) for line in (raw / "annotations.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [json.dumps({k: v for k, v in r.items() if k != "captions"}) + "\n" for r in records]
    (raw / "annotations.jsonl").write_text("".join(lines), encoding="utf-8")
    return root


def test_pipeline_on_questions_only(harness, qa_root):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import pipeline_flow
    from mmcore.config import load_config

    # Pretraining runs as two data-parallel processes (torchrun, gloo) started by the task; rank 0 reports
    # its epochs and every batch's loss to the task, which logs them to MLflow as they arrive.
    result = pipeline_flow(load_config("smoke", {"data_root": str(qa_root), "pretrain.processes": 2,
                                                 "pretrain.log_every_steps": 1}, dataset="qa-only"))
    metrics = result["metrics"]
    for name in ("vqa_acc", "vqa_acc_baseline", "vqa_acc_question_only", "vqa_acc_image_only"):
        assert 0.0 <= metrics[name] <= 1.0
    assert not any(k.startswith(("t2i_", "i2t_", "caption_")) for k in metrics)  # nothing to retrieve or caption
    client = MlflowClient()
    exp = client.get_experiment_by_name("qa-only")
    runs = {r.data.tags["stage"]: r for r in client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{result['run_id']}'")}
    assert runs["pretrain"].data.tags["pretrain_objective"] == "vqa"
    assert runs["pretrain"].data.tags["pretrain_processes"] == "2"
    assert "val_vqa_acc" in runs["pretrain"].data.metrics
    pretrain = runs["pretrain"].info.run_id
    assert [m.step for m in client.get_metric_history(pretrain, "val_vqa_acc")] == [0, 1]  # the smoke preset's 2
    steps = [m.step for m in client.get_metric_history(pretrain, "step_loss")]
    assert len(steps) >= 2 and steps == sorted(set(steps))  # one value per batch, in order
    assert "no captions" in runs["train"].data.tags["skipped_caption"]
    assert {"vqa_question_only_train_loss", "vqa_image_only_train_loss"} <= set(runs["train"].data.metrics)
