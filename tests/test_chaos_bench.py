"""bench/chaos.py's machinery on a stand-in command (a few seconds): the kill takes the whole process group
at the chosen line, the fingerprint sees every file, the plan repeats, the stage hit is read from the log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.chaos import POINTS, plan, stage_hit
from bench.chaos_proc import Watched, differences, fingerprint, group_members, left_running, run_watched

# Prints its child's pid, then a line every 0.1 s; the child (same process group) sleeps.
_SCRIPT = ("import subprocess, sys, time\n"
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
           "print('child', child.pid)\n"
           "for i in range(600):\n"
           "    print('tick', i); time.sleep(0.1)\n")


def test_a_kill_takes_the_whole_group_after_the_trigger_line(tmp_path: Path):
    run = run_watched([sys.executable, "-c", _SCRIPT], dict(os.environ), tmp_path / "log", timeout=30,
                      trigger=r"tick 5\b", delay=0.3)
    hit = next(t for t, line in run.lines if line == "tick 5")
    assert run.rc is None and not run.timed_out
    assert hit + 0.3 <= run.killed_at < hit + 2.0
    child = int(next(line for _, line in run.lines if line.startswith("child")).split()[1])
    assert not group_members(child) and run.survivors == []
    assert (tmp_path / "log").read_text().count("tick") == len(run.lines) - 1


def test_a_run_that_ends_first_is_not_killed_and_a_hung_one_times_out(tmp_path: Path):
    quick = run_watched([sys.executable, "-c", "print('done')"], dict(os.environ), tmp_path / "a", timeout=30,
                        trigger="never", delay=0.0)
    assert (quick.rc, quick.killed_at) == (0, None)
    hung = run_watched([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path / "b",
                       timeout=1)
    assert hung.timed_out and hung.rc is None and hung.seconds < 10


def test_fingerprint_lists_every_file_of_the_catalog_folders_and_differences_name_them(tmp_path: Path):
    for rel, text in {"processed/d/a": "1", "features/d/.staging/x": "2", "models/m/b": "3", "raw/r": "4"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    ref = fingerprint(tmp_path)
    assert list(ref) == ["features/d/.staging/x", "models/m/b", "processed/d/a"]
    (tmp_path / "models/m/b").write_text("changed")
    (tmp_path / "features/d/.staging/x").unlink()
    (tmp_path / "models/m/tmp").write_text("")
    assert differences(ref, fingerprint(tmp_path)) == ["features/d/.staging/x (missing)", "models/m/b (changed)",
                                                       "models/m/tmp (extra)"]


def test_the_plan_repeats_and_spreads_over_the_stages():
    times = {p.name: 10.0 * i for i, p in enumerate(POINTS)}
    end = 10.0 * len(POINTS)
    assert plan(10, 7, times, end) == plan(10, 7, times, end)
    assert [p for p, _ in plan(len(POINTS), 7, times, end)] == list(POINTS)
    assert all(0 <= d <= 10.0 for _, d in plan(25, 1, times, end))
    assert {p.stage for p, _ in plan(3, 0, times, end)} == {"ingest", "extract", "evaluate"}


def test_stage_hit_is_the_last_stage_logged_before_the_kill(tmp_path: Path):
    lines = [(1.0, "Beginning subflow run 'x' for flow 'ingest'"), (2.0, "Task run 'pretrain-a1' - epoch 1/2: ..."),
             (3.0, "Beginning subflow run 'y' for flow 'extract'")]
    assert stage_hit(Watched(None, 2.5, lines, killed_at=2.5)) == "pretrain"
    assert stage_hit(Watched(None, 0.5, lines, killed_at=0.5)) == "startup"
    # a stage's subflow ending is not the pipeline's end: that is when every flow run begun has ended
    flows = [(0.5, "Flow run 'a' - Beginning flow run 'a' for flow 'pipeline'"),
             (1.0, "Flow run 'a' - Beginning subflow run 'b' for flow 'extract'"),
             (2.0, "Flow run 'b' - Finished in state Completed()"),
             (3.0, "Flow run 'a' - Finished in state Completed()")]
    assert stage_hit(Watched(None, 2.5, flows, killed_at=2.5)) == "extract (finished)"
    assert stage_hit(Watched(None, 3.5, flows, killed_at=3.5)) == "done"
    assert left_running(tmp_path) == {"mlflow_runs": None, "prefect_flow_runs": None, "prefect_task_runs": None}
