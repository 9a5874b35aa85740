"""One training loop for every stage: AdamW, warmup + cosine schedule, clipping, atomic checkpoints.

The loop knows nothing of tracking: it reports each epoch's numbers to an `on_epoch` callback.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmcore.training import distributed
from mmcore.training.checkpoint import resume, save_checkpoint

StepFn = Callable[[Any], dict[str, torch.Tensor]]  # batch -> named loss terms, "loss" is optimised
EpochCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int, dict[str, float]], None]  # (global batch index, that batch's loss terms)
PRECISIONS = ("fp32", "bf16")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a function of (seed, epoch), so a resumed run repeats it."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen)


@dataclass
class FitConfig:
    epochs: int
    lr: float
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of all steps spent warming the learning rate up
    grad_clip: float = 1.0
    steps_per_epoch: int = 1  # batches per epoch, as `batches(epoch)` yields them
    precision: str = "fp32"  # "bf16": autocast around `step` (the backward pass stays outside)
    accumulate: int = 1  # batches whose gradients add up to one optimizer step
    monitor: str | None = None  # a validate() key: keep the weights of the epoch where it was best
    mode: str = "max"  # whether a larger ("max") or smaller ("min") monitored value is better
    patience: int | None = None  # stop after this many epochs without improvement (needs monitor)
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps inside an epoch (0: at epoch ends only)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"invalid precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"invalid mode {self.mode!r}; use max or min")
        if self.patience is not None and (self.monitor is None or self.patience < 1):
            raise ValueError("patience needs a monitor and must be >= 1")


def stage_fit_config(cfg: Any, steps_per_epoch: int, monitor: str, mode: str, has_validation: bool,
                     weight_decay: float = 0.01) -> FitConfig:
    """The FitConfig of a training stage: its epochs, lr, precision, accumulation and early stopping.

    Early stopping watches `monitor` only when the stage sets `patience` and has validation data.
    """
    stop = cfg.patience is not None and has_validation
    return FitConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=weight_decay, steps_per_epoch=steps_per_epoch,
                     precision=cfg.precision, accumulate=cfg.accumulate, monitor=monitor if stop else None,
                     mode=mode, patience=cfg.patience if stop else None,
                     checkpoint_every=getattr(cfg, "checkpoint_every", 0))


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when the run started
    best_epoch: int | None = None  # with a monitor: the (0-based) epoch whose weights the model ends with
    best_value: float | None = None
    stopped_early: bool = False


@dataclass
class _Best:
    """Early-stopping state: the best monitored value so far, its epoch and weights, epochs since."""

    mode: str
    value: float | None = None
    epoch: int | None = None
    weights: dict[str, torch.Tensor] | None = None
    stale: int = 0

    def exhausted(self, patience: int | None) -> bool:
        """Whether `patience` epochs passed without improvement (never without a patience)."""
        return patience is not None and self.stale >= patience

    def better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.value is None or (value > self.value if self.mode == "max" else value < self.value)

    def update(self, improved: bool, value: float, epoch: int, model: nn.Module) -> None:
        if improved:
            self.value, self.epoch, self.stale = value, epoch, 0
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.stale += 1

    def observe(self, metrics: dict[str, float], monitor: str, epoch: int, model: nn.Module) -> None:
        """Takes in one epoch's monitored value; rank 0's verdict counts on every rank."""
        if monitor not in metrics:
            raise KeyError(f"monitor {monitor!r} is not among the metrics {sorted(metrics)}")
        value = float(metrics[monitor])
        improved, value = distributed.broadcast_from_main([self.better(value), value])
        self.update(bool(improved), value, epoch, model)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "weights": self.weights, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.epoch, self.weights = state["value"], state["epoch"], state["weights"]
        self.stale = int(state["stale"])


def _autocast(precision: str, device: torch.device) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    supported = torch.amp.is_autocast_available(device.type) and (
        device.type != "cuda" or torch.cuda.is_bf16_supported())
    if not supported:
        warnings.warn(f"bf16 autocast is not available on {device.type}; training in fp32", stacklevel=3)
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class _Stepper(nn.Module):
    """Makes `step` the forward pass of a module, so DistributedDataParallel can wrap it.

    DDP syncs gradients only for backward passes of outputs of its own forward; the caller's `step`
    closes over the bare model, so DDP has to wrap the step, not just the model.
    """

    def __init__(self, model: nn.Module, step: StepFn) -> None:
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.step(batch)


def _schedule(cfg: FitConfig) -> Callable[[int], float]:
    total = max(1, cfg.epochs * -(-cfg.steps_per_epoch // cfg.accumulate))  # optimizer steps, not batches
    warm = max(1, int(cfg.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def _optimizer_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: FitConfig, n: int,
                    ddp: nn.parallel.DistributedDataParallel | None) -> None:
    """One optimizer step on the gradients of `n` accumulated batches, then the schedule's step."""
    if n < cfg.accumulate:  # a short last group: make its gradient the mean over its own batches
        for p in params:
            if p.grad is not None:
                p.grad.mul_(cfg.accumulate / n)
        if ddp is not None:  # all its backward passes ran under no_sync
            distributed.all_reduce_grads(params)
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_one_epoch(
    model: nn.Module,
    step: StepFn,
    batches: Callable[[int], Iterable[Any]],
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: FitConfig,
    *,
    ddp: nn.parallel.DistributedDataParallel | None = None,
    autocast: AbstractContextManager | None = None,
    on_step: StepCallback | None = None,
    step_every: int = 1,
    progress: dict[str, Any] | None = None,
    save_partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Trains on the batches of `epoch`, one optimizer step per `cfg.accumulate` of them.

    `ddp`, when given, wraps `step` (see `_Stepper`) and runs it instead. Returns the epoch's mean loss
    terms as `train_<name>`, averaged over ranks. `progress` ({"batches", "sums"}, from a checkpoint taken
    inside this epoch) starts after the batches it counts; `save_partial(progress)` is called every
    `cfg.checkpoint_every` optimizer steps.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    forward = ddp if ddp is not None else step
    autocast = autocast if autocast is not None else nullcontext()
    main = distributed.is_main()
    model.train()
    count = int((progress or {}).get("batches", 0))
    sums: dict[str, float] = dict((progress or {}).get("sums", {}))
    optimizer.zero_grad(set_to_none=True)
    for batch in epoch_batches(batches, epoch, count):
        closes_group = (count + 1) % cfg.accumulate == 0
        # DDP would all-reduce on every backward; within a group only the last one needs to
        with ddp.no_sync() if ddp is not None and not closes_group else nullcontext():
            with autocast:
                terms = forward(batch)
            (terms["loss"] / cfg.accumulate).backward()
        values = {key: float(value.detach()) for key, value in terms.items()}  # one device sync per batch
        if not math.isfinite(values["loss"]):  # before the step: NaN weights would hide where it began
            raise FloatingPointError(f"training loss is {values['loss']} at epoch {epoch}, step {count} of the epoch "
                                     f"(0-based); lower the learning rate, train in fp32 or check that batch")
        if closes_group:
            _optimizer_step(params, optimizer, scheduler, cfg, cfg.accumulate, ddp)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        if on_step is not None and main and count % step_every == 0:
            on_step(epoch * cfg.steps_per_epoch + count - 1, {**values, "lr": scheduler.get_last_lr()[0]})
        if save_partial is not None and closes_group and (count // cfg.accumulate) % cfg.checkpoint_every == 0:
            save_partial({"batches": count, "sums": dict(sums)})
    if count % cfg.accumulate:
        _optimizer_step(params, optimizer, scheduler, cfg, count % cfg.accumulate, ddp)
    return distributed.all_reduce_mean({f"train_{k}": v / max(1, count) for k, v in sums.items()})


def epoch_batches(batches: Callable[..., Iterable[Any]], epoch: int, skip: int) -> Iterable[Any]:
    """The batches of `epoch` after the first `skip`: `batches(epoch, skip)` when it can pass over them itself
    (its `skips` attribute, e.g. a stream that need not decode them), else those it yields, the first
    `skip` drawn and dropped (so every random draw is the same as in the unbroken epoch)."""
    if not skip:
        return batches(epoch)
    if getattr(batches, "skips", False):
        return batches(epoch, skip)
    return islice(batches(epoch), skip, None)


def evaluate(model: nn.Module, validate: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The metrics of `validate()`, run in eval mode without autograd."""
    model.eval()
    with torch.no_grad():
        return validate()


def fit(
    model: nn.Module,
    cfg: FitConfig,
    batches: Callable[[int], Iterable[Any]],
    step: StepFn,
    validate: Callable[[], dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    resume_key: str = "",
    on_step: StepCallback | None = None,
    step_every: int = 1,
) -> FitResult:
    """Trains `model` for cfg.epochs; `batches(epoch)` yields the batches of that epoch.

    With `checkpoint`, the full state is written atomically after every epoch (and every
    `cfg.checkpoint_every` optimizer steps), and a file written with the same `resume_key` (a digest of data
    and config) resumes the run where it stopped, inside an epoch too (`epoch_batches`); one with another
    key is ignored and overwritten.
    Under torch.distributed the step runs under DistributedDataParallel: `batches` must then yield this
    rank's share (see `distributed.shard`), the same number of batches on every rank. Only rank 0 writes
    the checkpoint (all ranks resume from it: a shared file system) and calls `on_epoch`.
    With `on_step`, every `step_every`-th batch's loss terms (and the learning rate) are reported too,
    numbered by batches since the start of training.
    """
    if cfg.monitor is not None and validate is None:
        raise ValueError(f"monitor {cfg.monitor!r} needs a validate function")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    result, best, progress = FitResult(), _Best(cfg.mode), {}  # progress: how far an epoch's checkpoint got
    if checkpoint is not None:
        result.resumed_from, result.history = resume(checkpoint, resume_key, model, opt, sched, best,
                                                     progress=progress)
    save = _saver(checkpoint, cfg, model, opt, sched, result.history, resume_key, best)
    # device_ids=None: CPU or one GPU
    ddp = nn.parallel.DistributedDataParallel(_Stepper(model, step)) if distributed.world() > 1 else None
    autocast = _autocast(cfg.precision, params[0].device if params else torch.device("cpu"))
    for epoch in range(result.resumed_from, cfg.epochs):
        if best.exhausted(cfg.patience):  # also a resumed run that had stopped
            result.stopped_early = True
            break
        inside = (lambda done, e=epoch: save(e, done)) if save and cfg.checkpoint_every else None
        metrics = train_one_epoch(model, step, batches, epoch, opt, sched, cfg, ddp=ddp, autocast=autocast,
                                  on_step=on_step, step_every=step_every, progress=progress, save_partial=inside)
        progress = {}
        metrics["lr"] = sched.get_last_lr()[0]
        if validate is not None:
            metrics.update(evaluate(model, validate))
        if cfg.monitor is not None:
            best.observe(metrics, cfg.monitor, epoch, model)
        result.history.append(metrics)
        if save:
            save(epoch + 1)
        if on_epoch is not None and distributed.is_main():
            on_epoch(epoch, metrics)
    return _finish(model, result, best)


def _finish(model: nn.Module, result: FitResult, best: _Best) -> FitResult:
    """The model with the best epoch's weights (with a monitor), in eval mode, and the result saying which."""
    if best.weights is not None:
        model.load_state_dict(best.weights)
    result.best_epoch, result.best_value = best.epoch, best.value
    model.eval()
    return result


def _saver(checkpoint: str | Path | None, cfg: FitConfig, model: nn.Module, opt: Any, sched: Any,
           history: list[dict[str, float]], key: str, best: _Best) -> Callable[..., None] | None:
    """`save(epochs_done, progress=None)`: the checkpoint after some epochs, or inside the next one."""
    if checkpoint is None:
        return None
    return lambda epochs, progress=None: save_checkpoint(
        checkpoint, model, opt, sched, epochs, history, key, best.state_dict() if cfg.monitor is not None else None,
        progress=progress)


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """Right-pads token id lists into a (B, T) long tensor."""
    width = max(1, max((len(s) for s in seqs), default=1))
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
