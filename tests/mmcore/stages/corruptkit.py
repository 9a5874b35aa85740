"""Corrupting an output the way a killed copy or a full disk does, and a hooks object that keeps the lines."""

from __future__ import annotations

from pathlib import Path

from mmcore.stages.hooks import Hooks


def truncate(path: Path) -> bytes:
    """Cuts `path` to half its length; returns its bytes from before."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


class Lines(Hooks):
    """Keeps every log line (warnings arrive as "warning: ...")."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith("warning: ")]
