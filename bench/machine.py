"""What the benchmarks share: the load of a shared machine, timed runs, and the results file.

The development machine is shared, so before every timing a benchmark waits (up to its `--idle-wait` s) for
the other processes to use < 0.15 cores (`wait_idle`), and it records their load during each run
(`timed`), so that a number measured under contention is visible as such in the JSON ("others_cores").
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- CPU time of this process and of its descendants (the forkserver pool) --------------------------


def _stat(pid: int) -> tuple[int, list[int]] | None:
    """(CPU ticks, child pids) of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        children = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                children += [int(c) for c in fh.read().split()]
        return int(fields[11]) + int(fields[12]), children
    except (OSError, IndexError, ValueError):
        return None


class DescendantCPU:
    """Samples the CPU time of every descendant process every `interval` s (a worker's last < interval s
    before it exits is missed, so this is a lower bound)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.ticks, self._stop = interval, {}, threading.Event()
        self.start: dict[int, int] = {}  # processes alive before (the forkserver of an earlier run)

    def _sample(self) -> None:
        todo = list((_stat(os.getpid()) or (0, []))[1])
        while todo:
            pid = todo.pop()
            st = _stat(pid)
            if st is not None:
                self.ticks[pid] = max(self.ticks.get(pid, 0), st[0])
                todo += st[1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> DescendantCPU:
        self._sample()
        self.start, self.ticks = self.ticks, {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(t - self.start.get(pid, 0) for pid, t in self.ticks.items()) / TICKS


def own_cpu() -> float:
    """CPU seconds of this process (user + system)."""
    t = os.times()
    return t.user + t.system


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICKS  # minus idle and iowait


def own_tree_cpu() -> float:
    """CPU seconds of this process and of its live descendants."""
    total, todo = own_cpu(), list((_stat(os.getpid()) or (0, []))[1])
    while todo:
        st = _stat(todo.pop())
        if st is not None:
            total += st[0] / TICKS
            todo += st[1]
    return total


def wait_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Waits until other processes use < `threshold` cores over a 1 s window (at most `max_wait` s);
    returns their load in cores over the last window."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, o0 = machine_busy(), own_tree_cpu()
        time.sleep(1.0)
        others = max(0.0, (machine_busy() - b0) - (own_tree_cpu() - o0))
        if others < threshold or time.monotonic() >= deadline:
            return others


# --- timed runs ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One timed run, filled in when its block ends."""

    before: float  # other processes' load (cores) just before the run
    seconds: float = 0.0  # wall clock
    cpu_s: float = 0.0  # this process's CPU
    pool_cpu_s: float = 0.0  # its descendants' CPU (a lower bound; 0 unless timed with pool=True)
    others: float = 0.0  # other processes' load (cores) during the run: an upper bound, as pool_cpu_s is a lower one


@contextmanager
def timed(idle_wait: float, pool: bool = False) -> Iterator[Timing]:
    """Waits (at most `idle_wait` s) for a quiet machine, then times the block: wall clock, this process's CPU,
    with `pool` its descendants' CPU too, and what the rest of the machine used meanwhile."""
    timing = Timing(before=wait_idle(idle_wait))
    cpu0, busy0 = own_cpu(), machine_busy()
    with DescendantCPU() if pool else nullcontext() as pool_cpu:
        t0 = time.perf_counter()
        yield timing
        timing.seconds = time.perf_counter() - t0
    timing.cpu_s, busy = own_cpu() - cpu0, machine_busy() - busy0
    timing.pool_cpu_s = pool_cpu.seconds if pool_cpu is not None else 0.0
    timing.others = max(0.0, busy - timing.cpu_s - timing.pool_cpu_s) / timing.seconds


def best_of(runs: list[dict]) -> dict:
    """The fastest of the repeats of one measurement."""
    return min(runs, key=lambda x: x["seconds"])


def spread(runs: list[dict]) -> dict:
    """Every repeat's seconds and other processes' load, for the results file."""
    return {"all_seconds": [round(x["seconds"], 3) for x in runs],
            "all_others_cores": [round(x["others_cores"], 2) for x in runs]}


# --- the results file ---------------------------------------------------------------------------------


def header(module: str, versions: dict[str, str]) -> dict:
    """The start of a results file: the machine and library versions, the date, the command that ran."""
    return {"machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                        "python": platform.python_version(), **versions,
                        "pyarrow": pa.__version__, "numpy": np.__version__},
            "date": time.strftime("%Y-%m-%d"), "command": f"python -m {module} " + " ".join(sys.argv[1:])}


def write_results(res: dict, start: float, out: Path) -> None:
    """Adds the total run time (since perf_counter `start`) to `res` and writes it to `out` as JSON."""
    res["total_seconds"] = round(time.perf_counter() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: Linux carries the parent's high-water mark into
    a vfork+exec'd child's ru_maxrss (RUSAGE_SELF and wait4 alike), so a child started by a 500 MB parent
    reports >= 500 MB however little it uses; VmHWM belongs to the child's own address space."""
    with open("/proc/self/status") as fh:
        kb = next(line for line in fh if line.startswith("VmHWM:")).split()[1]
    return int(kb) / 1024


def run_child(cmd: list[str], cwd: Path, label: str) -> dict:
    """Runs a benchmark's child process (it prints one JSON line last) with the repository on its path; returns
    that JSON plus its wall seconds, its CPU seconds and the other processes' load meanwhile (cores)."""
    import resource
    import subprocess

    busy, own, started = machine_busy(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(cwd)})
    if done.returncode:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(seconds=round(seconds, 1), cpu_s=round(child_cpu, 1),
                  others_cores=round(max(0.0, machine_busy() - busy - child_cpu) / seconds, 2))
    log(f"{label}: {result}")
    return result

