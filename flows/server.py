"""The local Prefect server that `mm` commands share when no Prefect API is configured.

Starting Prefect's server costs a command about 5 s on 2 cores on a warm database, and 17 s on a fresh
one. So the first command starts it in the background, on the database in PREFECT_HOME, and later commands
use it: they find it through `mm-server.json` in PREFECT_HOME and check that it answers. Each command
registers itself as a client (a file in `mm-clients/` naming its process) for as long as it runs. The
server stops itself once it has had no live client for MM_SERVER_IDLE_S seconds (default 900), so it
never stops under a running flow, however long its tasks are quiet; `mm server stop` stops it at once.

Starting, reusing and stopping all happen under one lock on PREFECT_HOME, so commands started together
share one server and one database migration. A record whose process is gone, or that was written by
another Prefect version, is replaced. Run as `python -m flows.server PORT` it is the server itself.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing, suppress
from pathlib import Path

from mmcore.io import folder_lock, write_json
from mmcore.processes import alive, describe, process_id

RECORD = "mm-server.json"
CLIENTS = "mm-clients"
LOG = "mm-server.log"
STARTUP_TIMEOUT_S = 120.0  # a fresh database takes ~17 s to create on 2 cores


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def idle_s() -> float:
    return float(os.environ.get("MM_SERVER_IDLE_S", "900"))


def prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_record(home: Path) -> dict | None:
    try:
        return json.loads((home / RECORD).read_text())
    except (OSError, ValueError):
        return None


def running(home: Path) -> dict | None:
    """The record of this home's server when its process lives and it is of this Prefect version."""
    record = read_record(home)
    if record and alive(record.get("process", "")) and record.get("prefect") == prefect_version():
        return record
    return None


def register_client(home: Path) -> Path:
    """Marks this process as a client of the server until it exits (a killed one is noticed as dead)."""
    folder = home / CLIENTS
    folder.mkdir(parents=True, exist_ok=True)
    mark = folder / f"{os.getpid()}.client"
    mark.write_text(process_id())
    atexit.register(mark.unlink, missing_ok=True)
    return mark


def live_clients(home: Path) -> int:
    """Clients whose process still runs; the marks of dead ones are removed."""
    count = 0
    for mark in (home / CLIENTS).glob("*.client"):
        with suppress(OSError):
            if alive(mark.read_text()) is False:
                mark.unlink()
            else:
                count += 1
    return count


def start(home: Path) -> dict:
    """Starts the server in its own session (it outlives this command), output to mm-server.log; returns
    its record. The caller holds the lock on `home` and waits with `wait_ready`."""
    port = free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOG, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.server", str(port)], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    record = {"url": f"http://127.0.0.1:{port}/api", "pid": proc.pid, "process": describe(proc.pid),
              "prefect": prefect_version(), "started": time.time()}
    write_json(home / RECORD, record)
    return record


def wait_ready(home: Path, record: dict, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(record["url"], timeout=2):
            return
        if alive(record["process"]) is False:
            tail = (home / LOG).read_text(errors="replace")[-2000:] if (home / LOG).is_file() else ""
            raise RuntimeError(f"the local Prefect server exited before answering on {record['url']}; "
                               f"{home / LOG} ends with:\n{tail}")
        time.sleep(0.1)
    raise RuntimeError(f"the local Prefect server did not answer on {record['url']} within {timeout:.0f} s "
                       f"(its log: {home / LOG})")


def stop(home: Path, timeout: float = 20.0) -> dict | None:
    """Stops this home's server (SIGTERM, then SIGKILL); returns the record of the one stopped, if any."""
    with folder_lock(home):
        record = running(home)
        if record is None:
            return None
        with suppress(ProcessLookupError):
            os.kill(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(record["process"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(record["process"]):
            with suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGKILL)
        (home / RECORD).unlink(missing_ok=True)
        return record


def _watch(server, home: Path, idle: float) -> None:  # noqa: ANN001  (a uvicorn.Server)
    """Stops `server` once it has had no live client for `idle` seconds, or at once when it has none and its
    record is gone or names another server (its home was removed, or a newer server replaced it)."""
    quiet_since = time.monotonic()
    while not server.should_exit:
        time.sleep(min(2.0, idle / 4))
        if live_clients(home):
            quiet_since = time.monotonic()
            continue
        record = read_record(home)
        orphan = record is None or record.get("pid") != os.getpid()
        if orphan or time.monotonic() - quiet_since > idle:
            with folder_lock(home):  # no command can find the record while it goes
                if live_clients(home):
                    continue
                if not orphan:
                    (home / RECORD).unlink(missing_ok=True)
                server.should_exit = True


def serve(port: int) -> None:
    """The server process: Prefect's server app under uvicorn on 127.0.0.1:`port`, until idle."""
    import uvicorn
    from prefect.settings import get_current_settings

    home = Path(get_current_settings().home)
    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                            log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    threading.Thread(target=_watch, args=(server, home, idle_s()), name="idle-watch", daemon=True).start()
    server.run()


if __name__ == "__main__":
    import flows  # noqa: F401  (the embedded defaults: PREFECT_HOME under MM_HOME)

    serve(int(sys.argv[1]))
