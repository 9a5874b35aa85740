"""The temporary Prefect server a command starts at its beginning when no Prefect API is configured."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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
print(json.dumps({"flow_api": url, "heartbeat": heartbeat, "server": api.server and api.server.url}))
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


def test_without_an_api_a_temporary_server_runs_the_flows_and_stops_at_exit(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(MM_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(REPO))
    proc, out = _run(env)
    assert out["server"] and out["flow_api"] == out["server"]
    assert "temporary server on " + out["server"] in proc.stderr
    assert out["heartbeat"] is None  # nobody outlives this process to watch heartbeats
    assert "Completed()" in proc.stderr
    assert not _listening(out["server"])  # stopped with the process


def test_a_configured_api_is_used_as_is(harness, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    env = {**os.environ, "PREFECT_API_URL": api_url, "MM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    proc, out = _run(env)
    assert out["server"] is None and out["flow_api"] == api_url
    assert out["heartbeat"] == 180  # Prefect's default: a real server can mark runs whose heartbeats stop
    assert "temporary server" not in proc.stderr


def test_a_process_that_already_imported_prefect_keeps_prefects_own_behaviour(harness):
    from flows.api import PrefectApi

    api = PrefectApi.start()
    with api:
        pass
    assert api.server is None
