"""The local Prefect server `mm` commands share when no Prefect API is configured (flows/server.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import server
from mmcore import processes

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from flows.api import PrefectApi

api = PrefectApi.start()
from prefect import flow
from prefect.settings import get_current_settings


@flow
def probe():
    s = get_current_settings()
    return s.api.url, s.flows.heartbeat_frequency


with api:
    url, heartbeat = probe()
print(json.dumps({"flow_api": url, "heartbeat": heartbeat, "server": api.server and api.server["url"]}))
"""


def _run(env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _listening(url: str) -> bool:
    port = int(url.split(":")[2].split("/")[0])
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    return {**env, "MM_HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def _gone(url: str, home: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _listening(url) and not (home / "prefect" / server.RECORD).exists():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MM_HOME for the module: its Prefect database is created once (about 17 s), by the first test."""
    return tmp_path_factory.mktemp("api") / "home"


def test_commands_share_one_local_server_that_stops_once_no_command_uses_it(home: Path):
    """The first command starts the server and leaves it running; the next finds it. While any command runs,
    the server stays up however long it is idle; once none has run for MM_SERVER_IDLE_S, it stops."""
    env = _env(home, MM_SERVER_IDLE_S="3")
    first, out = _run(env)
    client = home / "prefect" / server.CLIENTS / "test.client"  # this test, as a long-running command
    client.write_text(processes.process_id())
    assert out["server"] and out["flow_api"] == out["server"]
    assert f"local server, started now on {out['server']}" in first.stderr and "Completed()" in first.stderr
    assert out["heartbeat"] is None  # nothing acts on heartbeats against the local server
    second, out2 = _run(env)
    assert out2["server"] == out["server"] and f"local server on {out['server']}" in second.stderr
    time.sleep(5)
    assert _listening(out["server"])  # idle longer than MM_SERVER_IDLE_S, but a command still runs
    client.unlink()
    assert _gone(out["server"], home, within=20)


def test_a_killed_server_is_replaced_and_mm_server_stop_stops_it(home: Path):
    env = _env(home, MM_SERVER_IDLE_S="600")  # it must not stop by itself before `mm server stop`
    _, out = _run(env)
    record = json.loads((home / "prefect" / server.RECORD).read_text())
    assert record["url"] == out["server"] and record["prefect"] == server.prefect_version()
    os.kill(record["pid"], signal.SIGKILL)
    second, out2 = _run(env)
    assert out2["server"] != out["server"] and "started now" in second.stderr
    cli = [sys.executable, "-m", "flows.cli", "server"]
    status = subprocess.run([*cli, "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert f"local Prefect server on {out2['server']}" in status.stdout and "answers" in status.stdout
    stop = subprocess.run([*cli, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and f"stopped the local Prefect server on {out2['server']}" in stop.stdout
    assert _gone(out2["server"], home, within=5)


def test_a_configured_api_is_used_as_is(harness, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    env = {**os.environ, "PREFECT_API_URL": api_url, "MM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    proc, out = _run(env)
    assert out["server"] is None and out["flow_api"] == api_url
    assert out["heartbeat"] == 180  # Prefect's default: a real server can mark runs whose heartbeats stop
    assert "local server" not in proc.stderr


def test_a_process_that_already_imported_prefect_keeps_prefects_own_behaviour(harness):
    from flows.api import PrefectApi

    api = PrefectApi.start()
    with api:
        pass
    assert api.server is None
