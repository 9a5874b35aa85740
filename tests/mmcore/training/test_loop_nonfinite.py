"""fit stops on the first non-finite loss, naming where, before the optimizer steps on it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmcore.training.loop import FitConfig, fit

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_training_naming_epoch_and_step(bad):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = []

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(len(calls))
        loss = model(X[idx]).pow(2).mean()
        return {"loss": loss * bad if len(calls) == 7 else loss}  # epoch 1, its third batch

    def batches(epoch: int):
        return (torch.arange(s, s + 8) for s in range(0, 32, 8))

    with pytest.raises(FloatingPointError, match=rf"training loss is {bad} at epoch 1, step 2 of the epoch"):
        fit(model, FitConfig(epochs=3, lr=0.1, steps_per_epoch=4, grad_clip=0), batches, step)
    assert len(calls) == 7  # nothing ran after it
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad gradient was never stepped on
