from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcore.training.loop import (
    FitConfig,
    _Best,
    epoch_order,
    evaluate,
    fit,
    pad_batch,
    select_device,
    train_one_epoch,
)

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))


def _run(model: nn.Module, ckpt=None, stop_after: int | None = None, key: str = "k"):
    def batches(epoch):
        order = epoch_order(len(X), 0, epoch)
        for s in range(0, len(X), 16):
            yield order[s : s + 16]

    def step(idx):
        return {"loss": ((model(X[idx]) - Y[idx]) ** 2).mean()}

    def on_epoch(epoch, metrics):
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt  # stands in for a kill right after the checkpoint was written

    cfg = FitConfig(epochs=6, lr=0.05, steps_per_epoch=4)
    return fit(model, cfg, batches, step, lambda: {"val": 0.0}, checkpoint=ckpt, on_epoch=on_epoch, resume_key=key)


def test_fit_reduces_the_loss():
    result = _run(_model())
    assert result.history[-1]["train_loss"] < 0.2 * result.history[0]["train_loss"]
    assert len(result.history) == 6 and "val" in result.history[0]


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    full = _model()
    _run(full)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(_model(), ckpt, stop_after=2)
    torch.manual_seed(123)  # a fresh process would not share the interrupted one's RNG state
    resumed = _model()
    result = _run(resumed, ckpt)
    assert result.resumed_from == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 6


def test_checkpoint_of_other_data_is_not_resumed(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    _run(_model(), ckpt, key="old-data")
    result = _run(_model(), ckpt, key="new-data")
    assert result.resumed_from == 0 and len(result.history) == 6


def test_helpers():
    assert pad_batch([[2, 5], [2]]).tolist() == [[2, 5], [2, 0]]
    assert torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 2))
    assert not torch.equal(epoch_order(10, 1, 2), epoch_order(10, 1, 3))
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="auto"):
        select_device("gpu7")


def test_saved_checkpoints_are_byte_reproducible(tmp_path):
    from mmcore.io import save_torch

    state = {"w": torch.arange(6.0), "meta": {"epoch": 3}}
    a, b = save_torch(state, tmp_path / "a.pt"), save_torch(state, tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    assert torch.equal(torch.load(a, weights_only=True)["w"], state["w"])


def _epoch_parts():
    """A linear model under plain SGD at a constant rate, recording the gradient of every optimizer step."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    stepped = []  # (weights before the step, their gradients)

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            stepped.append(([p.detach().clone() for p in model.parameters()],
                            [p.grad.clone() for p in model.parameters()]))
            return super().step(closure)

    opt = Recording(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    losses = []

    def step(idx):
        loss = ((model(X[idx]) - Y[idx]) ** 2).mean()
        losses.append(float(loss.detach()))
        return {"loss": loss, "twice": 2 * loss}

    return model, opt, sched, step, stepped, losses


def _five_batches(epoch):
    order = torch.arange(40)
    for s in range(0, 40, 8):
        yield order[s : s + 8]


def test_train_one_epoch_steps_each_group_on_its_mean_gradient_a_short_last_one_too():
    model, opt, sched, step, stepped, losses = _epoch_parts()
    cfg = FitConfig(epochs=1, lr=0.1, steps_per_epoch=5, accumulate=2, grad_clip=0)
    metrics = train_one_epoch(model, step, _five_batches, 0, opt, sched, cfg)

    assert len(stepped) == 3 and sched.last_epoch == 3  # groups of batches 0-1, 2-3 and the short 4
    batches = list(_five_batches(0))
    for (weights, grads), group in zip(stepped, (batches[0:2], batches[2:4], batches[4:]), strict=True):
        ref = nn.Linear(4, 1)
        with torch.no_grad():
            for p, w in zip(ref.parameters(), weights, strict=True):
                p.copy_(w)
        (sum(((ref(X[idx]) - Y[idx]) ** 2).mean() for idx in group) / len(group)).backward()
        assert all(torch.allclose(g, p.grad) for g, p in zip(grads, ref.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())  # nothing left over for the next epoch
    assert metrics == {"train_loss": sum(losses) / 5, "train_twice": sum(2 * v for v in losses) / 5}


def test_train_one_epoch_reports_every_nth_batch_numbered_since_the_start():
    model, opt, sched, step, _, losses = _epoch_parts()
    cfg = FitConfig(epochs=2, lr=0.1, steps_per_epoch=5)
    reported = []
    train_one_epoch(model, step, _five_batches, 1, opt, sched, cfg, on_step=lambda i, t: reported.append((i, t)),
                    step_every=2)
    assert [i for i, _ in reported] == [6, 8]  # epoch 1's second and fourth batches
    assert [t["loss"] for _, t in reported] == [losses[1], losses[3]]
    assert all(t["lr"] == 0.1 and set(t) == {"loss", "twice", "lr"} for _, t in reported)


def test_evaluate_runs_validate_in_eval_mode_without_autograd():
    model = _model()
    model.train()
    seen = {}

    def validate():
        seen.update(training=model.training, grad=torch.is_grad_enabled())
        return {"val": 1.5}

    assert evaluate(model, validate) == {"val": 1.5}
    assert seen == {"training": False, "grad": False} and torch.is_grad_enabled()


def test_best_keeps_the_best_epoch_and_counts_epochs_since():
    model, best = _model(), _Best("max")
    for epoch, value in enumerate([1.0, 3.0, 2.0, float("nan")]):
        best.observe({"val": value}, "val", epoch, model)
    assert (best.value, best.epoch, best.stale) == (3.0, 1, 2)
    assert best.exhausted(2) and not best.exhausted(3) and not best.exhausted(None)
    with pytest.raises(KeyError, match="'missing' is not among the metrics \\['other'\\]"):
        best.observe({"other": 1.0}, "missing", 4, model)
