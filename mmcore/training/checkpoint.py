"""Training checkpoints: a run's full state, written atomically by rank 0 and resumed under the same key.

A checkpoint holds the model, optimizer and scheduler states, every RNG state the step may draw from,
the early-stopping state (with a monitor), the metrics history and the number of epochs done. It is
saved as tensors and plain numbers only, so it loads with `torch.load(..., weights_only=True)`. One that does
not load (truncated, say) is treated as absent: the run starts from scratch, with a warning naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mmcore import integrity
from mmcore.io import save_torch
from mmcore.training import distributed


class Stateful(Protocol):
    """Anything with a state dict: optimizers, schedulers, the early-stopping state."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


def rng_state() -> dict[str, Any]:
    """Torch, NumPy and CUDA RNG states as tensors and plain numbers (loadable with weights_only).

    Python's `random` is not among them: training draws nothing from it, and other threads of the process
    (Prefect names its runs with it) would make its state, and so the checkpoint's bytes, differ between
    runs that train alike."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "rng": torch.get_rng_state(),
        "np_rng": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the RNG states `rng_state` returned; CUDA's only on as many devices as it was saved from."""
    torch.set_rng_state(state["rng"])
    keys, pos, has_gauss, cached = state["np_rng"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: Stateful, scheduler: Stateful, epoch: int,
                    history: list[dict[str, float]], key: str, best: dict[str, Any] | None = None,
                    progress: dict[str, Any] | None = None) -> None:
    """Writes the full state after `epoch` epochs, atomically; a no-op on every rank but 0.

    `best` is the early-stopping state, saved only when given (runs with a monitor). `progress` marks a
    checkpoint taken inside epoch `epoch` (0-based): the batches it has done and its loss sums so far.
    """
    if not distributed.is_main():
        return
    # Interned metric names: pickle writes a string shared by several dicts once, so a history that was
    # partly loaded from a checkpoint (a resumed run) would otherwise be other bytes than an unbroken run's.
    history = [{sys.intern(name): value for name, value in row.items()} for row in history]
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             **rng_state(), "epoch": epoch, "history": history, "key": key}
    if best is not None:
        state["best"] = best
    if progress is not None:
        state["progress"] = progress
    save_torch(state, path)


def load_checkpoint(path: str | Path, key: str, warn: integrity.Warn = integrity.warn) -> dict[str, Any] | None:
    """The state saved at `path` under `key`; None when there is no file, it was written under another key,
    or it does not load (then `warn` names it)."""
    if not Path(path).exists():
        return None
    try:
        state = integrity.load_torch(path)
    except integrity.CorruptOutput as exc:
        warn(f"{path} is corrupt ({exc.why}): training from scratch")
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def resume(path: str | Path, key: str, model: nn.Module, optimizer: Stateful, scheduler: Stateful,
           best: Stateful, warn: integrity.Warn = integrity.warn,
           progress: dict[str, Any] | None = None) -> tuple[int, list[dict[str, float]]]:
    """Loads a checkpoint saved under `key` into the given objects and the RNGs.

    Returns the number of epochs already done (the epoch to start at) and their metrics history; without
    such a checkpoint (none, another key's, or a corrupt one: `warn` names it) nothing is touched and the
    run starts at (0, []). A checkpoint taken inside that epoch fills `progress` with how far it got.
    """
    state = load_checkpoint(path, key, warn)
    if state is None:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state)
    if "best" in state:  # only runs with a monitor save it
        best.load_state_dict(state["best"])
    if progress is not None and "progress" in state:
        progress.update(state["progress"])
    return int(state["epoch"]), list(state["history"])
