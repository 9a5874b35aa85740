"""The pretrain task on the 60-image fixture: it resumes a finished run without training again, trains from
scratch when asked (`fresh`), and logs the objective, sample counts, epochs and the encoder to MLflow."""

from __future__ import annotations

import pytest


def test_a_finished_run_is_picked_up_not_trained_again(built, data_copy, run_log, mlflow_run):
    from tasks.pretrain import pretrain

    cfg, cat = data_copy("processed", "pretrain")
    result = pretrain.fn(cfg, cat, mlflow_run.id)
    expected = built.result.pretrain
    assert result.resumed_from == 1  # the checkpoint holds the one epoch of the smoke fixture
    assert (result.encoder_sha256, result.dataset_digest, result.final) == (
        expected.encoder_sha256, expected.dataset_digest, expected.final)
    assert (result.objective, result.processes) == ("contrastive", 1)
    assert (result.train_samples, result.val_samples) == (built.result.ingest.splits["train"],
                                                          built.result.ingest.splits["val"])
    assert result.outputs == [cat.pretrain.encoder]
    assert not any("epoch 1/1" in line for line in run_log())  # no epoch ran here
    metrics, tags = mlflow_run.metrics(), mlflow_run.tags()
    assert metrics["resumed_from_epoch"] == 1
    assert {k: metrics[f"final_{k}"] for k in result.final} == pytest.approx(result.final)
    assert "train_loss" not in metrics  # epochs are logged as they run, and none did
    assert (tags["dataset_digest"], tags["train_samples"], tags["val_samples"], tags["pretrain_objective"],
            tags["pretrain_processes"]) == (result.dataset_digest, str(result.train_samples),
                                            str(result.val_samples), "contrastive", "1")
    assert mlflow_run.artifacts("checkpoints") == ["checkpoints/encoder.pt"]
    assert mlflow_run.datasets() == [("smoke-samples", result.dataset_digest[:36], {"train"})]


def test_fresh_trains_from_scratch_and_logs_each_epoch(built, data_copy, run_log, mlflow_run):
    from tasks.pretrain import pretrain

    cfg, cat = data_copy("processed", "pretrain")
    result = pretrain.fn(cfg, cat, mlflow_run.id, fresh=True)
    assert result.resumed_from == 0
    # same data, config and seed on one machine: the same weights as the fixture's run
    assert result.encoder_sha256 == built.result.pretrain.encoder_sha256
    assert mlflow_run.metrics()["resumed_from_epoch"] == 0
    history = mlflow_run.history("train_loss")
    assert [step for step, _ in history] == [0]  # one epoch, step = epoch
    assert history[0][1] == pytest.approx(result.final["train_loss"])
    epochs = [line for line in run_log() if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith(f"epoch 1/1: train_loss={result.final['train_loss']:.4g}")
