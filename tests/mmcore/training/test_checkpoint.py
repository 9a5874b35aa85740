from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mmcore.integrity import CorruptOutputWarning
from mmcore.io import save_torch
from mmcore.training import distributed
from mmcore.training.checkpoint import load_checkpoint, resume, rng_state, save_checkpoint, set_rng_state
from mmcore.training.loop import FitConfig, epoch_order, fit, seed_everything
from tests.mmcore.stages.corruptkit import truncate

X = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


class Box:
    """A stand-in for the early-stopping state: anything with a state dict."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state or {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


def _parts(seed: int):
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):
        ((model(X) - Y) ** 2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def _draws() -> tuple[list[float], float]:
    # gauss draws use the cached second value of Box-Muller, so they check that cache is restored too
    return torch.randn(3).tolist(), float(np.random.standard_normal())


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [v.detach().clone() for v in model.state_dict().values()]


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    seed_everything(3)
    np.random.standard_normal()  # leave a cached gauss value
    path = save_torch(rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    seed_everything(99)
    set_rng_state(torch.load(path, weights_only=True))
    assert _draws() == expected


def test_a_checkpoint_is_the_same_bytes_whatever_else_drew_from_pythons_random(tmp_path):
    """Prefect names runs with Python's `random` in other threads; training draws nothing from it, so its
    state is not saved, and two runs that train alike write the same checkpoint."""
    written = []
    for name, draws in (("a.pt", 0), ("b.pt", 5)):
        model, opt, sched = _parts(0)
        seed_everything(1)
        [random.random() for _ in range(draws)]
        save_checkpoint(tmp_path / name, model, opt, sched, 1, [{"loss": 1.0}], "k")
        written.append((tmp_path / name).read_bytes())
    assert written[0] == written[1]


def test_resume_loads_everything_saved_under_the_same_key(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 3)
    history = [{"train_loss": 2.0}, {"train_loss": 1.0}]
    best = {"value": 0.5, "epoch": 1, "weights": None, "stale": 0}
    save_checkpoint(path, model, opt, sched, 2, history, "k", best)
    expected_draws = _draws()

    seed_everything(99)
    other, other_opt, other_sched = _parts(1)
    box = Box()
    assert resume(path, "k", other, other_opt, other_sched, box) == (2, history)
    assert _draws() == expected_draws
    assert box.state == best
    assert other_sched.last_epoch == sched.last_epoch == 3 and other_sched.get_last_lr() == sched.get_last_lr()
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(other), strict=True))
    # Adam's moments and step count came back too: one more step keeps both runs equal
    _train(model, opt, sched, 1)
    _train(other, other_opt, other_sched, 1)
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(other), strict=True))


def test_resume_ignores_a_missing_file_and_a_checkpoint_with_another_key(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 2)
    save_checkpoint(path, model, opt, sched, 2, [{"a": 1.0}, {"a": 0.5}], "old-data", {"value": 1.0})

    fresh, fresh_opt, fresh_sched = _parts(1)
    before, rng_before, box = _weights(fresh), torch.get_rng_state(), Box({"value": None})
    assert resume(tmp_path / "missing.pt", "new-data", fresh, fresh_opt, fresh_sched, box) == (0, [])
    assert resume(path, "new-data", fresh, fresh_opt, fresh_sched, box) == (0, [])
    assert load_checkpoint(path, "new-data") is None and load_checkpoint(path, "old-data")["epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(fresh), strict=True))
    assert torch.equal(torch.get_rng_state(), rng_before) and fresh_sched.last_epoch == 0
    assert box.state == {"value": None} and fresh_opt.state_dict()["state"] == {}


def test_a_corrupt_checkpoint_is_treated_as_absent_with_a_warning_naming_it(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 2)
    save_checkpoint(path, model, opt, sched, 2, [{"a": 1.0}, {"a": 0.5}], "k", {"value": 1.0})
    truncate(path)

    fresh, fresh_opt, fresh_sched = _parts(1)
    before, box = _weights(fresh), Box({"value": None})
    expected = rf"{path} is corrupt \(torch.load fails on .*\): training from scratch"
    with pytest.warns(CorruptOutputWarning, match=expected):
        assert resume(path, "k", fresh, fresh_opt, fresh_sched, box) == (0, [])
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(fresh), strict=True))
    assert box.state == {"value": None} and fresh_sched.last_epoch == 0
    said: list[str] = []
    assert load_checkpoint(path, "k", warn=said.append) is None  # or to the caller's own channel
    assert len(said) == 1 and said[0].startswith(f"{path} is corrupt (")


def test_fit_starts_from_scratch_over_a_corrupt_checkpoint_and_replaces_it(tmp_path):
    full_model, full = _fit_run(None)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit_run(ckpt, stop_after=1)
    truncate(ckpt)
    with pytest.warns(CorruptOutputWarning, match="ckpt.pt is corrupt"):
        model, result = _fit_run(ckpt)
    assert result.resumed_from == 0 and result.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(full_model), strict=True))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 5  # a whole checkpoint again


def test_save_checkpoint_writes_only_on_rank_0(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _parts(0)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    save_checkpoint(path, model, opt, sched, 1, [{"a": 1.0}], "k")
    assert not path.exists()
    monkeypatch.undo()
    save_checkpoint(path, model, opt, sched, 1, [{"a": 1.0}], "k")
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "np_rng"} <= set(state) and "best" not in state
    assert (state["epoch"], state["history"], state["key"]) == (1, [{"a": 1.0}], "k")


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _parts(0)
    save_checkpoint(path, model, opt, sched, 1, [], "k")

    def write_half_then_die(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, sched, 2, [], "k")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # and no half-written temporary file


def _fit_run(ckpt: Path | None, stop_after: int | None = None):
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def batches(epoch):
        order = epoch_order(len(X), 0, epoch)
        for s in range(0, len(X), 5):  # 4 batches of 5 and one of 4: groups of 2, 2 and a short 1
            yield order[s : s + 5]

    def step(idx):
        # torch (dropout) and NumPy RNGs both feed the loss: a resume must restore both
        noise = torch.from_numpy(np.random.normal(0, 0.1, (len(idx), 1)).astype(np.float32))
        return {"loss": ((model(X[idx]) - Y[idx] - noise) ** 2).mean()}

    def on_epoch(epoch, metrics):
        if epoch == stop_after:
            raise KeyboardInterrupt  # stands in for a kill right after the checkpoint was written

    cfg = FitConfig(epochs=5, lr=0.05, steps_per_epoch=5, accumulate=2)
    result = fit(model, cfg, batches, step, checkpoint=ckpt, on_epoch=on_epoch, resume_key="k")
    return model, result


def test_fit_resumes_after_the_last_checkpointed_epoch_bit_for_bit(tmp_path):
    full_model, full = _fit_run(None)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit_run(ckpt, stop_after=1)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    model, result = _fit_run(ckpt)  # starts from seed 0 again, as a fresh process would
    assert result.resumed_from == 2 and result.history == full.history and len(full.history) == 5
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(full_model), strict=True))


def test_a_resumed_history_is_saved_as_the_same_bytes_as_an_unbroken_one(tmp_path):
    """A resumed run's history is partly unpickled (other string objects for the same metric names than the
    epochs it adds): saved, it must still be the bytes an unbroken run writes."""
    model, opt, sched = _parts(0)
    names = ["train_loss", "val_t2i_r1"]
    unbroken = [{name: 1.0 for name in names}, {name: 2.0 for name in names}]
    save_checkpoint(tmp_path / "a.pt", model, opt, sched, 2, unbroken, "k")
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)["history"][:1]
    resumed = loaded + [{"".join(list(name)): 2.0 for name in names}]  # equal names, other objects
    save_checkpoint(tmp_path / "b.pt", model, opt, sched, 2, resumed, "k")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
