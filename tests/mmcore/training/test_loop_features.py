"""The opt-in features of the training loop: bf16, accumulation, early stopping, full-state resume, DDP."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmcore.training import distributed
from mmcore.training.loop import FitConfig, epoch_order, fit

ROOT = Path(__file__).resolve().parents[3]
X = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def _batches(batch_size: int, n: int = len(X)):
    def batches(epoch):
        order = epoch_order(n, 0, epoch)
        for s in range(0, n, batch_size):
            yield order[s : s + batch_size]

    return batches


def _mse(model: nn.Module):
    return lambda idx: {"loss": ((model(X[idx]).float() - Y[idx]) ** 2).mean()}


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [v.detach().clone() for v in model.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 0.0) -> bool:
    return all(torch.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a, b, strict=True))


def _reference_fit(model: nn.Module, cfg: FitConfig, batches, step) -> None:
    """The loop as it was before the opt-in features: what default settings must still do, bit for bit."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    warm = max(1, int(cfg.warmup * total))
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / (total - warm))))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else cosine(s))
    for epoch in range(cfg.epochs):
        model.train()
        for batch in batches(epoch):
            loss = step(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()


def test_defaults_train_exactly_as_before():
    runs = []
    for cfg in (FitConfig(epochs=4, lr=0.05, steps_per_epoch=5),
                FitConfig(epochs=4, lr=0.05, steps_per_epoch=5, precision="fp32", accumulate=1, monitor=None,
                          mode="max", patience=None)):
        model = _mlp()
        result = fit(model, cfg, _batches(8), _mse(model))
        runs.append((_weights(model), result))
    reference = _mlp()
    _reference_fit(reference, FitConfig(epochs=4, lr=0.05, steps_per_epoch=5), _batches(8), _mse(reference))
    assert _same(runs[0][0], runs[1][0]) and runs[0][1].history == runs[1][1].history
    assert _same(runs[0][0], _weights(reference))
    assert runs[0][1].best_epoch is None and not runs[0][1].stopped_early


def test_bf16_autocast_trains_on_cpu():
    model, dtypes = _mlp(), set()

    def step(idx):
        out = model(X[idx])
        dtypes.add(out.dtype)
        return {"loss": ((out.float() - Y[idx]) ** 2).mean()}

    result = fit(model, FitConfig(epochs=6, lr=0.05, steps_per_epoch=5, precision="bf16"), _batches(8), step)
    assert dtypes == {torch.bfloat16}  # the step really ran under autocast
    assert next(model.parameters()).dtype == torch.float32  # the weights stay fp32
    assert result.history[-1]["train_loss"] < 0.3 * result.history[0]["train_loss"]


@pytest.mark.parametrize("kwargs, match", [({"precision": "fp16x"}, "fp32, bf16"), ({"accumulate": 0}, "accumulate"),
                                           ({"mode": "mean"}, "max or min"), ({"patience": 2}, "monitor")])
def test_invalid_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(epochs=1, lr=0.1, **kwargs)


def test_accumulated_small_batches_step_like_one_big_batch():
    # 40 samples: 10 batches of 4 in 5 groups of 2 vs 5 batches of 8; and 5 batches of 8 in groups of 2, 2
    # and a short one of 1 vs batches of 16, 16 and 8.
    for small, acc in ((4, 2), (8, 2)):
        big = small * acc
        runs = []
        for batch_size, accumulate in ((small, acc), (big, 1), (small, 1)):
            torch.manual_seed(0)
            model = nn.Linear(4, 1)
            steps = -(-len(X) // batch_size)
            cfg = FitConfig(epochs=3, lr=0.05, steps_per_epoch=steps, accumulate=accumulate, grad_clip=0)
            result = fit(model, cfg, _batches(batch_size), _mse(model))
            runs.append((_weights(model), [h["lr"] for h in result.history]))
        (acc_w, acc_lr), (big_w, big_lr), (plain_w, _) = runs
        assert _same(acc_w, big_w, atol=1e-6)
        assert acc_lr == pytest.approx(big_lr)  # the schedule counts optimizer steps, not batches
        assert not _same(acc_w, plain_w, atol=1e-3)  # ...and accumulating is not a no-op


VALS = [0.1, 0.5, 0.4, 0.3, 0.2, 0.9]  # best at epoch 1, then two worse epochs: stop before epoch 4


def _early_stopping_run(ckpt=None, stop_after=None, mode="max"):
    model, seen, snapshots = _mlp(), {}, {}

    def batches(epoch):
        seen["epoch"] = epoch
        yield from _batches(8)(epoch)

    def validate():
        return {"val": VALS[seen["epoch"]] * (1 if mode == "max" else -1)}

    def on_epoch(epoch, metrics):
        snapshots[epoch] = _weights(model)
        if epoch == stop_after:
            raise KeyboardInterrupt  # stands in for a kill right after the checkpoint was written

    cfg = FitConfig(epochs=6, lr=0.05, steps_per_epoch=5, monitor="val", mode=mode, patience=2)
    result = fit(model, cfg, batches, _mse(model), validate, checkpoint=ckpt, on_epoch=on_epoch, resume_key="k")
    return model, result, snapshots


@pytest.mark.parametrize("mode", ["max", "min"])
def test_early_stopping_restores_the_best_weights(mode):
    model, result, snapshots = _early_stopping_run(mode=mode)
    assert result.stopped_early and len(result.history) == 4 and sorted(snapshots) == [0, 1, 2, 3]
    assert result.best_epoch == 1 and result.best_value == pytest.approx(VALS[1] * (1 if mode == "max" else -1))
    assert _same(_weights(model), snapshots[1]) and not _same(_weights(model), snapshots[3])


@pytest.mark.parametrize("stop_after", [2, 3])
def test_early_stopping_state_survives_a_resume(tmp_path, stop_after):
    full_model, full, _ = _early_stopping_run()
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _early_stopping_run(ckpt, stop_after=stop_after)
    assert torch.load(ckpt, weights_only=True)["best"]["epoch"] == 1
    model, result, snapshots = _early_stopping_run(ckpt)
    assert result.resumed_from == stop_after + 1
    assert sorted(snapshots) == list(range(stop_after + 1, 4))  # after epoch 3 the resumed run stops at once
    assert result.stopped_early and result.best_epoch == 1 and result.history == full.history
    assert _same(_weights(model), _weights(full_model))


KILL_SCRIPT = """
import sys, time
import numpy as np, torch
from torch import nn
from mmcore.training.loop import FitConfig, epoch_order, fit, seed_everything

ckpt, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.set_num_threads(1)
seed_everything(0)
X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

def batches(epoch):
    order = epoch_order(32, 0, epoch)
    for s in range(0, 32, 8):
        yield order[s : s + 8]

def step(idx):
    time.sleep(delay)  # per batch, so a kill lands mid-run
    # torch (dropout) and NumPy RNGs both feed the loss: a resume must restore both
    noise = torch.from_numpy(np.random.normal(0, 0.5, (len(idx), 1)).astype(np.float32))
    return {"loss": ((model(X[idx]) - Y[idx] - noise) ** 2).mean()}

result = fit(model, FitConfig(epochs=6, lr=0.05, steps_per_epoch=4), batches, step, checkpoint=ckpt, resume_key="k")
torch.save({"model": model.state_dict(), "history": result.history, "resumed_from": result.resumed_from}, out)
"""


def _script(tmp_path: Path, name: str, text: str) -> tuple[Path, dict[str, str]]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return path, env


def _ckpt_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])  # atomic writes: never a half-written file
    except FileNotFoundError:
        return 0


def test_a_killed_run_resumes_to_the_same_end(tmp_path):
    script, env = _script(tmp_path, "train.py", KILL_SCRIPT)
    run = lambda ckpt, out, delay: subprocess.Popen(  # noqa: E731
        [sys.executable, str(script), str(tmp_path / ckpt), str(tmp_path / out), str(delay)], env=env)
    uninterrupted = run("full.pt", "full_out.pt", 0)
    killed = run("ckpt.pt", "unused.pt", 0.15)
    deadline = time.monotonic() + 60
    while (done := _ckpt_epoch(tmp_path / "ckpt.pt")) < 2:
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    assert killed.poll() is None  # still training: the kill lands mid-run
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(10) == -signal.SIGKILL
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert 2 <= done <= state["epoch"] < 6 and not (tmp_path / "unused.pt").exists()
    assert {"np_rng", "rng"} <= set(state)

    assert run("ckpt.pt", "resumed_out.pt", 0).wait(60) == 0
    assert uninterrupted.wait(60) == 0
    full = torch.load(tmp_path / "full_out.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed_out.pt", weights_only=True)
    assert resumed["resumed_from"] == state["epoch"] and full["resumed_from"] == 0
    assert resumed["history"] == full["history"] and len(full["history"]) == 6
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])


DDP_SCRIPT = """
import sys
from pathlib import Path
import torch
from torch import nn
from mmcore.training import distributed
from mmcore.training.loop import FitConfig, epoch_order, fit

out = Path(sys.argv[1])
torch.set_num_threads(1)
assert distributed.init_from_env() == 2
rank, world = distributed.rank(), distributed.world()
torch.manual_seed(rank)  # different initial weights per rank: DDP starts every rank from rank 0's
X = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
model, seen = nn.Linear(4, 1), {}
VALS = [0.1, 0.5, 0.4, 0.3, 0.2, 0.9]

def batches(epoch):
    seen["epoch"] = epoch
    mine = distributed.shard(epoch_order(40, 0, epoch), rank, world)
    for s in range(0, len(mine), 4):  # 5 batches of 4 per rank, in groups of 2: the last group is short
        yield mine[s : s + 4]

def validate():
    # only rank 0's value counts; rank 1's alone would never stop
    return {"val": VALS[seen["epoch"]] if rank == 0 else float(seen["epoch"])}

def on_epoch(epoch, metrics):
    (out / f"on_epoch_rank{rank}.txt").write_text(str(epoch))

cfg = FitConfig(epochs=6, lr=0.05, steps_per_epoch=5, accumulate=2, grad_clip=0, monitor="val", patience=2)
result = fit(model, cfg, batches, lambda idx: {"loss": ((model(X[idx]) - Y[idx]) ** 2).mean()}, validate,
             checkpoint=out / f"ckpt_rank{rank}.pt", on_epoch=on_epoch)
torch.save({"model": model.state_dict(), "history": result.history, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early}, out / f"rank{rank}.pt")
distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    script, env = _script(tmp_path, "ddp.py", DDP_SCRIPT)
    env.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], env={**env, "RANK": str(r),
                              "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    try:
        logs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs

    # one process, batches of 8 in the same order, rank 0's initial weights and validation values
    torch.manual_seed(0)
    model, seen = nn.Linear(4, 1), {}

    def batches(epoch):
        seen["epoch"] = epoch
        yield from _batches(8)(epoch)

    cfg = FitConfig(epochs=6, lr=0.05, steps_per_epoch=5, accumulate=2, grad_clip=0, monitor="val", patience=2)
    single = fit(model, cfg, batches, _mse(model), lambda: {"val": VALS[seen["epoch"]]})
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for state in ranks:
        assert state["stopped_early"] and state["best_epoch"] == 1 and len(state["history"]) == 4
        assert _same(list(state["model"].values()), _weights(model), atol=1e-5)
        for mine, ref in zip(state["history"], single.history, strict=True):
            assert mine["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)  # averaged over ranks
    assert (tmp_path / "ckpt_rank0.pt").exists() and not (tmp_path / "ckpt_rank1.pt").exists()
    assert (tmp_path / "on_epoch_rank0.txt").read_text() == "3" and not (tmp_path / "on_epoch_rank1.txt").exists()


def test_shard_gives_every_rank_the_same_number_of_samples(monkeypatch):
    order = torch.tensor([4, 0, 3, 1, 2])
    parts = [distributed.shard(order, r, 2) for r in range(2)]
    assert [p.tolist() for p in parts] == [[4, 3, 2], [0, 1, 4]]  # padded by wrapping around
    assert distributed.shard([1, 2, 3, 4, 5, 6, 7], 2, 3) == [3, 6, 2]
    assert sorted(set(torch.cat(parts).tolist())) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rank"):
        distributed.shard(order, 2, 2)
    # outside a process group everything is a no-op
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() == 1 and distributed.world() == 1 and distributed.is_main()
    assert distributed.shard(order).tolist() == order.tolist()
    assert distributed.all_reduce_mean({"a": 1.5}) == {"a": 1.5}


def test_a_run_stopped_inside_an_epoch_resumes_at_the_batch_after_its_last_checkpoint(tmp_path):
    """checkpoint_every=1: a checkpoint after every optimizer step; a run stopped in the middle of epoch 2 goes on
    from the batch after the last one saved and ends bit for bit where an unbroken run does."""
    xs = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    ys = xs.sum(1, keepdim=True)

    def make() -> nn.Module:
        torch.manual_seed(0)
        np.random.seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def batches(epoch):
        order = epoch_order(32, 0, epoch)
        for s in range(0, 32, 8):
            yield order[s : s + 8]

    def run(model: nn.Module, ckpt: Path, stop_at: int | None = None):
        def step(idx):
            noise = torch.from_numpy(np.random.normal(0, 0.5, (len(idx), 1)).astype(np.float32))
            return {"loss": ((model(xs[idx]) - ys[idx] - noise) ** 2).mean()}

        def on_step(n: int, metrics: dict) -> None:
            if n == stop_at:
                raise KeyboardInterrupt  # after this batch's step, before its checkpoint

        cfg = FitConfig(epochs=3, lr=0.05, steps_per_epoch=4, checkpoint_every=1)
        return fit(model, cfg, batches, step, checkpoint=ckpt, resume_key="k", on_step=on_step)

    full_model = make()
    full = run(full_model, tmp_path / "full.pt")
    with pytest.raises(KeyboardInterrupt):
        run(make(), tmp_path / "stopped.pt", stop_at=6)  # epoch 1 (0-based), its third batch
    state = torch.load(tmp_path / "stopped.pt", weights_only=True)
    assert (state["epoch"], state["progress"]["batches"]) == (1, 2)
    resumed_model = make()
    resumed = run(resumed_model, tmp_path / "stopped.pt")
    assert resumed.resumed_from == 1 and resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(),
                                                  resumed_model.state_dict().values(), strict=True))
