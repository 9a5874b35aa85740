"""The Prefect API a command's flows talk to, made ready while the command is still importing its code.

With a Prefect server configured (`PREFECT_API_URL` in the environment, the active profile or
prefect.toml) this does nothing. Without one, Prefect would start its temporary server the first time a
flow runs, importing the whole server package into the command's process (about 3 s) and then waiting
for the server to boot (about 5 s on 2 cores). `PrefectApi.start()` starts the same temporary server
(Prefect's server app under uvicorn, in its own process, with Prefect's settings for a temporary server)
as soon as the command begins, and points this process at it. The server boots while the command
imports torch and MLflow; entering the returned object waits until it answers. It is stopped when the
process exits, as Prefect's own temporary server is.

That is only possible before Prefect reads its settings, so a process that has already imported Prefect
(a test calling the CLI in-process, a notebook) keeps Prefect's own behaviour.

Flow-run heartbeats are off against the temporary server: it lives and dies with this process, so
nobody could act on a missed heartbeat, and each flow run would otherwise wait up to a second at its end
for its heartbeat thread to stop.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, closing
from typing import Any

from mmcore.io import folder_lock

STARTUP_TIMEOUT_S = 120.0  # a fresh database takes ~17 s to create on 2 cores


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """Prefect's server app in a child process on 127.0.0.1, stopped (SIGTERM, then SIGKILL) at exit."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        import prefect

        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"], env=env)
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {self.process.returncode} "
                                   f"before answering on {self.url} (its output is above)")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the temporary Prefect server did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class PrefectApi:
    def __init__(self) -> None:
        self.server: TemporaryServer | None = None
        self._error: BaseException | None = None
        self._configured = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefect-api", daemon=True)
        self._stack = ExitStack()

    @classmethod
    def start(cls) -> PrefectApi:
        """Starts the temporary server when no Prefect API is configured. Returns once this process is
        pointed at it; the server keeps booting in the background."""
        api = cls()
        if "prefect" in sys.modules:  # settings already read: leave it to Prefect
            return api
        api._thread.start()
        api._configured.wait()
        return api

    def _run(self) -> None:
        try:
            from prefect.settings import get_current_settings

            settings = get_current_settings()
            if settings.api.url or not settings.server.ephemeral.enabled:
                return
            # Commands started together would each create or migrate the database as their server boots, and
            # the migrations race: one server boots at a time (the others wait here, not their commands).
            with folder_lock(settings.home):
                self.server = TemporaryServer()
                print(f"Prefect API: temporary server on {self.server.url} (set PREFECT_API_URL to use a Prefect "
                      "server)", file=sys.stderr, flush=True)
                os.environ["PREFECT_API_URL"] = self.server.url  # for this process and the ones it starts
                from prefect.context import refresh_global_settings_context

                refresh_global_settings_context()
                self._configured.set()
                self.server.wait_ready()
        except BaseException as exc:  # re-raised in the caller's thread by __enter__
            self._error = exc
        finally:
            self._configured.set()

    def __enter__(self) -> PrefectApi:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self.server is not None:
            from prefect.settings import temporary_settings

            self._stack.enter_context(temporary_settings(updates={"flows.heartbeat_frequency": None}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
