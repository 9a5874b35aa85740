"""One training loop for every stage: AdamW, warmup + cosine schedule, clipping, atomic checkpoints.

The loop knows nothing of tracking: it reports each epoch's numbers to an `on_epoch` callback.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmcore.io import save_torch

StepFn = Callable[[Any], dict[str, torch.Tensor]]  # batch -> named loss terms, "loss" is optimised
EpochCallback = Callable[[int, dict[str, float]], None]


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
    steps_per_epoch: int = 1


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when the run started


def _schedule(cfg: FitConfig) -> Callable[[int], float]:
    total = max(1, cfg.epochs * cfg.steps_per_epoch)
    warm = max(1, int(cfg.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def fit(
    model: nn.Module,
    cfg: FitConfig,
    batches: Callable[[int], Iterable[Any]],
    step: StepFn,
    validate: Callable[[], dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    resume_key: str = "",
) -> FitResult:
    """Trains `model` for cfg.epochs; `batches(epoch)` yields the batches of that epoch.

    With `checkpoint`, the full state is written atomically after every epoch, and an existing file
    written with the same `resume_key` (a digest of data and config) resumes the run where it stopped;
    one with another key is ignored and overwritten.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    result = FitResult()
    start = 0
    state = None
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state if state.get("key") == resume_key else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        result.history = list(state["history"])
        start = result.resumed_from = int(state["epoch"])

    for epoch in range(start, cfg.epochs):
        model.train()
        sums: dict[str, float] = {}
        count = 0
        for batch in batches(epoch):
            terms = step(batch)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
        metrics = {f"train_{k}": v / max(1, count) for k, v in sums.items()}
        metrics["lr"] = sched.get_last_lr()[0]
        if validate is not None:
            model.eval()
            with torch.no_grad():
                metrics.update(validate())
        result.history.append(metrics)
        if checkpoint is not None:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": torch.get_rng_state(), "epoch": epoch + 1, "history": result.history,
                     "key": resume_key}
            save_torch(state, checkpoint)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    model.eval()
    return result


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """Right-pads token id lists into a (B, T) long tensor."""
    width = max(1, max((len(s) for s in seqs), default=1))
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
