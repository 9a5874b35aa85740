"""Per-batch MLflow logging: buffered, sent in queued batches, all there after flush."""

from __future__ import annotations


def test_step_logger_delivers_every_step_after_flush(harness):
    from mmcore.config import load_config
    from tasks import tracking

    run_id = tracking.start_run(load_config("smoke"), "step-logging-test")
    log = tracking.step_logger(run_id)
    for step in range(7):
        log(step, {"loss": 1.0 / (step + 1), "lr": 0.01})
    assert len(tracking.client().get_metric_history(run_id, "step_loss")) == 0  # still buffered
    log.flush()
    history = tracking.client().get_metric_history(run_id, "step_loss")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(s, round(1.0 / (s + 1), 6)) for s in range(7)]
    tracking.end_run(run_id)
