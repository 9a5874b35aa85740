"""What a running stage reports, and to whom: the stage calls its `Hooks`, the caller decides where it goes.

The base class drops everything but warnings. The Prefect tasks send it to MLflow and the run log
(tasks/tracking.py), `PrintHooks` to the terminal (bench/direct.py), a benchmark to its clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mmcore import integrity

Metrics = dict[str, float]


class Hooks:
    def log(self, message: str) -> None:
        """A line for a person: what the stage found or decided."""

    def warn(self, message: str) -> None:
        """Something wrong the stage found and repaired (a corrupt output it rebuilds): a Python warning
        (`mmcore.integrity.CorruptOutputWarning`, whatever the hooks) and a `log` line."""
        integrity.warn(message)
        self.log(f"warning: {message}")

    def epoch(self, part: str, epoch: int, epochs: int, metrics: Metrics, items: int | None = None) -> None:
        """Epoch `epoch` (0-based) of `epochs` of the model `part` ("" for the encoders, else the head's name)
        is done; `items`: training samples per epoch, for a samples/s rate."""

    def step(self, part: str, step: int, metrics: Metrics) -> None:
        """A batch's loss terms (every `pretrain.log_every_steps`-th batch of pretraining)."""

    def flush(self) -> None:
        """The stage is done: send whatever is still buffered."""

    def epoch_callback(self, part: str, epochs: int, items: int | None = None) -> Callable[[int, Metrics], None]:
        """`epoch` as the training loop's per-epoch callback for one model."""
        return lambda epoch, metrics: self.epoch(part, epoch, epochs, metrics, items)


class PrintHooks(Hooks):
    """Epochs and log lines to the terminal, with the seconds since the stage started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        print(message, flush=True)

    def epoch(self, part: str, epoch: int, epochs: int, metrics: Metrics, items: int | None = None) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr")
        prefix = f"{part} " if part else ""
        print(f"{prefix}epoch {epoch + 1}/{epochs}: {shown} ({time.monotonic() - self.started:.0f} s)", flush=True)
