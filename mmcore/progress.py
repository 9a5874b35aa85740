"""Progress of long loops as plain text: items done of a total, the rate and the time left.

The library only formats; the caller decides where the line goes (a Prefect run logger, the terminal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def format_seconds(seconds: float) -> str:
    """12 s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class Progress:
    """Counts work done against a known total; `line()` says how far along, how fast and how long is left.

    The rate is the average since the start (after the first update), which is steady for the per-shard
    and per-epoch updates it is used for.
    """

    total: int
    unit: str = "items"
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def update(self, done: int) -> str:
        self.done = done
        return self.line()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.3g} {self.unit}/s, elapsed {format_seconds(elapsed)}"
        if 0 < self.done < self.total and rate > 0:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        return text
