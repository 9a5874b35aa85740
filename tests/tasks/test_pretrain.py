"""The pretrain task on the 60-image fixture: it resumes a finished run without training again, trains from
scratch when asked (`fresh`), and logs the objective, sample counts, epochs and the encoder to MLflow."""

from __future__ import annotations

import io

import pytest
import torch

from mmcore.integrity import CorruptOutputWarning
from tests.mmcore.stages.corruptkit import truncate


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
    assert list(result.outputs) == [cat.pretrain.encoder, cat.pretrain.checkpoint]
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


def test_the_flow_rebuilds_a_corrupt_cached_encoder_or_checkpoint_with_a_warning(data_copy, run_log):
    from flows.pretrain import pretrain_flow

    cfg, cat = data_copy("processed", "pretrain")
    first = pretrain_flow(cfg)  # the fixture's finished run, picked up; its result is cached
    good = {path: path.read_bytes() for path in first.outputs}
    truncate(cat.pretrain.encoder)
    again = pretrain_flow(cfg)  # written again from the checkpoint
    assert again.resumed_from == 1 and {path: path.read_bytes() for path in again.outputs} == good
    warned = [line for line in run_log() if "corrupt" in line]
    assert len(warned) == 1 and warned[0].startswith(
        f"the cached result of pretrain stands for {cat.pretrain.encoder}, which is corrupt (sha256 ")
    truncate(cat.pretrain.checkpoint)
    with pytest.warns(CorruptOutputWarning, match=f"{cat.pretrain.checkpoint} is corrupt"):
        third = pretrain_flow(cfg)  # trained again from scratch, from the same seed
    assert third.resumed_from == 0 and cat.pretrain.encoder.read_bytes() == good[cat.pretrain.encoder]
    # the checkpoint holds the same training state; not its bytes: the Python RNG state it also saves is shared
    # with the Prefect threads of this process, which draw from it meanwhile (run names)
    saved, before = torch.load(cat.pretrain.checkpoint, weights_only=True), torch.load(
        io.BytesIO(good[cat.pretrain.checkpoint]), weights_only=True)
    for part in ("model", "optimizer", "scheduler", "history", "epoch", "key", "rng"):
        assert _same(saved[part], before[part]), part
    warned = [line for line in run_log() if "corrupt" in line][1:]
    assert len(warned) == 2, warned
    assert warned[0].startswith(f"the cached result of pretrain stands for {cat.pretrain.checkpoint}, which is corrupt")
    assert warned[1].startswith(f"warning: {cat.pretrain.checkpoint} is corrupt (torch.load fails on its ")
    assert warned[1].endswith("): training from scratch")


def _same(a, b) -> bool:
    """Equal values, tensors compared element by element."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
