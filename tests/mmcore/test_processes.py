"""Scratch folders: a killed process's are removed by the next one on the host; live ones stay."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from mmcore import processes


def test_scratch_of_a_dead_process_is_cleared_and_live_ones_stay(tmp_path):
    mine = processes.scratch(tmp_path, ".work-")
    dead = processes.scratch(tmp_path, ".work-")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (dead / processes.OWNER).write_text(f"{socket.gethostname()}:{child.pid}:{processes._start_time(child.pid) or 1}")
    elsewhere = processes.scratch(tmp_path, ".work-")
    (elsewhere / processes.OWNER).write_text("another-host:1:1")
    fresh, old = tmp_path / ".work-fresh", tmp_path / ".work-old"  # killed before naming their owner
    fresh.mkdir(), old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (tmp_path / ".other-x").mkdir()
    assert sorted(processes.clear_scratch(tmp_path, ".work-")) == sorted([dead, old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".other-x", mine.name, elsewhere.name, fresh.name])
    assert (mine / processes.OWNER).read_text() == processes.process_id()
