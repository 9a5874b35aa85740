"""Which process this is, and whether another one still runs: host, pid and the process's start time, so a
reused pid is not mistaken for it. Runs and scratch folders are tagged with it; whatever a killed process
left behind is cleaned up by the next one on the same host."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from functools import cache
from pathlib import Path

OWNER = "owner"  # the file naming the process that made a scratch folder


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the process name (state first); None where there is no /proc."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="utf-8").read()  # noqa: SIM115
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the name before it may hold spaces


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc); None where there is no /proc."""
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22


@cache
def process_id() -> str:
    """host:pid:start time of this process."""
    return describe(os.getpid())


def describe(pid: int) -> str:
    """host:pid:start time of process `pid` of this host: what `alive` reads."""
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def alive(process: str) -> bool | None:
    """Whether the process a tag names still runs; None for another host's (cannot tell)."""
    host, _, rest = process.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not ours
        pass
    fields = _stat(pid)
    if fields and fields[0] == "Z":  # exited, not yet reaped by its parent
        return False
    return started == "?" or (fields[19] if fields else None) == started


def scratch(parent: Path, prefix: str) -> Path:
    """A new scratch folder `<prefix><random>` in `parent`, owned by this process (see `clear_scratch`)."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (folder / OWNER).write_text(process_id())
    return folder


def clear_scratch(parent: Path, prefix: str, stale_s: float = 3600.0) -> list[Path]:
    """Removes the scratch folders in `parent` whose process is gone (killed before it could), and those that
    name no owner and are older than `stale_s`; folders of live processes and other hosts stay."""
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        try:
            owner = (folder / OWNER).read_text()
        except OSError:
            owner = None
        try:
            dead = alive(owner) is False if owner else time.time() - folder.stat().st_mtime > stale_s
        except OSError:
            continue
        if dead and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
