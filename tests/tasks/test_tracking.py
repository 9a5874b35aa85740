"""MLflow bookkeeping: a stage run with the resolved config, per-batch losses buffered and all delivered
after flush, and a stage's epochs through `RunHooks` to MLflow (step = epoch) and the run log."""

from __future__ import annotations

import re

import pytest


def test_start_run_logs_the_resolved_config_and_stage_run_marks_failures(harness):
    import mlflow

    from mmcore.config import load_config
    from tasks import tracking

    cfg = load_config("smoke", {"pretrain.epochs": 3})
    with tracking.stage_run(cfg, "pretrain") as run_id:
        pass
    run = tracking.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "pretrain"  # no flow run: the stage's name
    assert (run.data.tags["stage"], run.data.tags["dataset"]) == ("pretrain", "smoke")
    assert run.data.params == {k: str(v) for k, v in cfg.flat().items()}
    assert run.data.params["pretrain.epochs"] == "3" and "preset" not in run.data.params
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json") == cfg.model_dump(mode="json")
    with pytest.raises(RuntimeError, match="boom"), tracking.stage_run(cfg, "train") as failed:
        raise RuntimeError("boom")
    assert tracking.client().get_run(failed).info.status == "FAILED"


def test_step_logger_delivers_every_step_after_flush(mlflow_run):
    from tasks import tracking

    log = tracking.StepLogger(mlflow_run.id)
    for step in range(7):
        log(step, {"loss": 1.0 / (step + 1), "lr": 0.01})
    assert mlflow_run.history("step_loss") == []  # still buffered
    log.flush()
    assert [(s, round(v, 6)) for s, v in mlflow_run.history("step_loss")] == [(s, round(1.0 / (s + 1), 6))
                                                                                for s in range(7)]
    assert [s for s, _ in mlflow_run.history("step_lr")] == list(range(7))


def test_run_hooks_send_epochs_steps_and_lines_to_mlflow_and_the_log(mlflow_run, run_log):
    from tasks import tracking

    hooks = tracking.RunHooks(mlflow_run.id)
    on_epoch = hooks.epoch_callback("vqa", 2, items=10)
    on_epoch(0, {"train_loss": 0.5, "lr": 0.01})
    on_epoch(1, {"train_loss": 0.25, "lr": 0.005})
    hooks.epoch("", 0, 1, {"val_t2i_r1": 0.125})  # the encoders: no prefix
    hooks.step("", 3, {"loss": 0.75})
    hooks.log("found 3 shards")
    hooks.flush()
    assert mlflow_run.history("vqa_train_loss") == [(0, 0.5), (1, 0.25)]
    assert mlflow_run.history("vqa_lr") == [(0, 0.01), (1, 0.005)]
    assert mlflow_run.history("val_t2i_r1") == [(0, 0.125)]
    assert mlflow_run.history("step_loss") == [(3, 0.75)]
    first, second, encoders, line = run_log()
    assert re.fullmatch(r"vqa_epoch 1/2: train_loss=0\.5 \[1/2 epochs \(50%\), .*, \d+ samples/s\]", first), first
    assert second.startswith("vqa_epoch 2/2: train_loss=0.25 [2/2 epochs (100%)") and "lr=" not in second
    assert encoders.startswith("epoch 1/1: val_t2i_r1=0.125 [1/1 epochs (100%)") and "samples/s" not in encoders
    assert line == "found 3 shards"


def test_run_hooks_without_a_run_only_log(run_log):
    from tasks import tracking

    hooks = tracking.RunHooks(None)
    hooks.epoch("caption", 0, 1, {"train_loss": 1.5})
    hooks.step("", 0, {"loss": 1.0})
    hooks.flush()
    assert len(run_log()) == 1 and run_log()[0].startswith("caption_epoch 1/1: train_loss=1.5 [")
