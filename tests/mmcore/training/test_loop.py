from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcore.training.loop import FitConfig, epoch_order, fit, pad_batch, select_device

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
