"""The train task on the 60-image fixture: every head the data supports, with its epochs, the checkpoint
and the answer count logged to MLflow."""

from __future__ import annotations


def test_train_writes_the_heads_and_logs_their_epochs(built, data_copy, run_log, mlflow_run):
    from tasks.train import train

    cfg, cat = data_copy("processed", "pretrain", "features")
    result = train.fn(cfg, cat, mlflow_run.id)
    expected = built.result.train
    assert cat.heads.heads.is_file() and result.outputs == [cat.heads.heads]
    # same features, config and seed on one machine: the fixture's heads, byte for byte
    assert (result.heads_sha256, result.features_digest) == (expected.heads_sha256, expected.features_digest)
    assert (result.answers, result.skipped) == (expected.answers, expected.skipped) and result.answers > 1
    assert result.skipped == {}  # shapes have captions in two languages and questions: every head trains
    metrics = mlflow_run.metrics()
    for head in ("vqa", "caption", "translation", "generation", "vqa_question_only", "vqa_image_only"):
        assert [step for step, _ in mlflow_run.history(f"{head}_train_loss")] == [0], head  # one epoch each
        assert any(line.startswith(f"{head}_epoch 1/1: ") for line in run_log()), head
    assert metrics["vqa_train_loss"] > 0
    assert mlflow_run.tags()["answers"] == str(result.answers)
    assert mlflow_run.artifacts("checkpoints") == ["checkpoints/heads.pt"]
    assert mlflow_run.datasets() == [("smoke-features", result.features_digest[:36], {"train"})]
