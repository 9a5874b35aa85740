"""The model and the server bench/serving.py measures: the smoke pipeline trained into a temporary folder, and
`mlflow models serve` for a registered model on 127.0.0.1, in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.machine import log

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def smoke_model(work: Path, images: int) -> tuple[str, Path]:
    """Runs `mm pipeline --preset smoke` on synthetic images under `work`; returns its tracking URI and raw folder."""
    from mmcore.data.synth import generate_shapes

    raw = work / "data" / "raw" / "smoke"
    generate_shapes(raw, images, seed=0, image_size=32, test_images=images // 3)
    home = work / "home"
    env = {**os.environ, "MM_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "MM_ARTIFACT_ROOT"):
        env.pop(key, None)
    cmd = [str(BIN / "mm"), "pipeline", "--preset", "smoke", "--set", f"data_root={work / 'data'}"]
    log(f"training: {' '.join(cmd)} (log: {work / 'pipeline.log'})")
    with open(work / "pipeline.log", "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {rc}); see {work / 'pipeline.log'}")
    return f"sqlite:///{home / 'mlflow.db'}", raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_size(pgid: int) -> int:
    """Live processes in process group `pgid` (the server and its uvicorn workers)."""
    count = 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                count += int(fh.read().rsplit(")", 1)[1].split()[2]) == pgid
        except (OSError, ValueError, IndexError):
            continue
    return count


@contextmanager
def model_server(model_uri: str, tracking_uri: str, log_path: Path, workers: int | None,
                 timeout: float = 300) -> Iterator[dict]:
    """`mlflow models serve` on 127.0.0.1 in its own process group; yields its URL and start-up time, stops it."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
           "--port", str(port), *(["--workers", str(workers)] if workers else [])]
    log(f"serving: {' '.join(cmd)}")
    with open(log_path, "w+b") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.perf_counter()
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(f"error: mlflow models serve exited with {proc.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (OSError, urllib.error.URLError):
                    pass
                if time.perf_counter() - started > timeout:
                    sys.exit(f"error: mlflow models serve did not answer /ping within {timeout} s; see {log_path}")
                time.sleep(0.2)
            startup_s = round(time.perf_counter() - started, 1)
            fh.seek(0)
            ran = [line.split("Running command", 1)[1].strip(" '=") for line in fh.read().decode(errors="replace")
                   .splitlines() if "Running command" in line]  # what MLflow ran: uvicorn and its workers
            yield {"url": f"http://127.0.0.1:{port}", "startup_s": startup_s, "processes": _group_size(proc.pid),
                   "command": cmd, "ran": ran[0] if ran else None}
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
