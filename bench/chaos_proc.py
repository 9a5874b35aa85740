"""What bench/chaos.py needs around one run of a command: run it in its own process group while watching
its output, SIGKILL the whole group at a chosen point, fingerprint the data root it wrote, and read what it
left in its MLflow and Prefect stores.

The stores are read with `sqlite3` in read-only mode, never through MLflow's or Prefect's clients, where a
killed run may have left a half-created database: a client would migrate it, and so repair it before the
rerun had a chance to (or fail to). The test metrics and the registry are read with `MlflowClient`, after
a run that completed.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG_FOLDERS = ("processed", "features", "models")  # mmcore/catalog.py: what the stages write under data_root


@dataclass
class Watched:
    """One run of the command, complete, killed or timed out."""

    rc: int | None  # exit status; None when this benchmark killed it
    seconds: float  # from the start to its exit or to the kill
    lines: list[tuple[float, str]]  # every line of its output, with seconds since the start
    killed_at: float | None = None  # seconds since the start; None when it ended by itself
    timed_out: bool = False
    survivors: list[int] = field(default_factory=list)  # processes of its group still alive afterwards

    def seen_before(self, t: float) -> list[str]:
        return [line for at, line in self.lines if at <= t]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, seconds: float) -> list[int]:
    """Waits until the group has no live process; SIGKILLs what is left after `seconds`; returns those pids."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return []
        time.sleep(0.2)
    left = group_members(pgid)
    if left:
        _kill_group(pgid)
    return left


class _Reader(threading.Thread):
    """Copies the command's output to `log`, timestamping each line, and notes when `trigger` first matches."""

    def __init__(self, proc: subprocess.Popen, start: float, log: Path, trigger: re.Pattern | None):
        super().__init__(daemon=True)
        self.proc, self.start_at, self.log, self.trigger = proc, start, log, trigger
        self.lines: list[tuple[float, str]] = []
        self.hit = threading.Event()
        self.hit_at = 0.0
        if trigger is None:  # the command's start is the trigger
            self.hit.set()

    def run(self) -> None:
        with open(self.log, "w", encoding="utf-8") as fh:
            for line in self.proc.stdout:
                at = time.perf_counter() - self.start_at
                fh.write(f"{at:8.2f} {line}")
                fh.flush()
                self.lines.append((at, line.rstrip("\n")))
                if not self.hit.is_set() and self.trigger.search(line):
                    self.hit_at = at
                    self.hit.set()


def _kill_at_point(proc: subprocess.Popen, reader: _Reader, delay: float, deadline: float) -> float | None:
    """SIGKILLs the group `delay` s after the trigger; returns when (s since the start), or None when the
    command ended first (or the trigger never came before the deadline)."""
    while not reader.hit.wait(0.1):
        if proc.poll() is not None or time.perf_counter() > deadline:
            return None
    target = reader.start_at + reader.hit_at + delay
    try:
        proc.wait(timeout=max(0.0, target - time.perf_counter()))
        return None  # it ended before the kill
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        return time.perf_counter() - reader.start_at


def run_watched(cmd: list[str], env: dict[str, str], log: Path, timeout: float,
                trigger: str | None = None, delay: float | None = None) -> Watched:
    """Runs `cmd` in a new session (its own process group). With `delay`, SIGKILLs the whole group `delay` s
    after the first output line matching `trigger` (after the start when `trigger` is None). A run past
    `timeout` s is killed too (`timed_out`)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, start_new_session=True)
    reader = _Reader(proc, start, log, re.compile(trigger) if trigger else None)
    reader.start()
    deadline = start + timeout
    killed_at = _kill_at_point(proc, reader, delay, deadline) if delay is not None else None
    timed_out = False
    try:
        rc = proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        rc, timed_out = proc.wait(), True
    seconds = killed_at if killed_at is not None else time.perf_counter() - start
    survivors = _wait_group_gone(proc.pid, 5.0 if killed_at is not None or timed_out else 30.0)
    reader.join(timeout=10)
    return Watched(None if killed_at is not None or timed_out else rc, seconds, reader.lines, killed_at,
                   timed_out, survivors)


# --- what a run left behind -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(data_root: Path) -> dict[str, str]:
    """Path relative to `data_root` -> sha256 of every file under the catalog's folders (hidden ones, such as
    staging folders and temporary files, included)."""
    found = {}
    for folder in CATALOG_FOLDERS:
        for dirpath, _, files in os.walk(data_root / folder):
            for name in files:
                path = Path(dirpath) / name
                found[path.relative_to(data_root).as_posix()] = _sha256(path)
    return dict(sorted(found.items()))


def differences(reference: dict[str, str], got: dict[str, str]) -> list[str]:
    """Each file that is not byte-identical to the reference's: `path (changed|missing|extra)`."""
    out = []
    for path in sorted(reference.keys() | got.keys()):
        if path not in got:
            out.append(f"{path} (missing)")
        elif path not in reference:
            out.append(f"{path} (extra)")
        elif reference[path] != got[path]:
            out.append(f"{path} (changed)")
    return out


def _count(db: Path, sql: str) -> int | None:
    """The count `sql` returns from the SQLite file `db`, opened read-only; None if it is missing or unreadable
    (a store that the killed run had not finished creating)."""
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute(sql).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return None


def left_running(mm_home: Path) -> dict[str, int | None]:
    """MLflow runs and Prefect flow (and task) runs whose state is RUNNING: after a rerun, nothing should be.
    (The MLflow count is `search_runs(..., "attributes.status = 'RUNNING'")` over every experiment.)"""
    prefect = mm_home / "prefect" / "prefect.db"
    return {"mlflow_runs": _count(mm_home / "mlflow.db", "SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'"),
            "prefect_flow_runs": _count(prefect, "SELECT COUNT(*) FROM flow_run WHERE state_type = 'RUNNING'"),
            "prefect_task_runs": _count(prefect, "SELECT COUNT(*) FROM task_run WHERE state_type = 'RUNNING'")}


def outcome(mm_home: Path, dataset: str) -> dict:
    """The test metrics of the newest finished pipeline run and the registered model's versions and champion;
    call it only after a run that exited 0 (MLflow's client would migrate a half-created store)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mm_home}/mlflow.db",
                          registry_uri=f"sqlite:///{mm_home}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.stage = 'pipeline' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    name = f"mmcore-{dataset}"
    versions = client.search_model_versions(f"name = '{name}'")
    try:
        champion = client.get_model_version_by_alias(name, "champion").version
    except MlflowException:  # no such alias (or model)
        champion = None
    return {"metrics": dict(sorted(runs[0].data.metrics.items())) if runs else None,
            "registry": {"versions": len(versions), "champion": champion}}
