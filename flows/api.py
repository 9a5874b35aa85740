"""The Prefect API a command's flows talk to, made ready while the command is still importing its code.

With a Prefect server configured (`PREFECT_API_URL` in the environment, the active profile or
prefect.toml) this does nothing. Without one, Prefect would start its temporary server the first time a
flow runs, importing the whole server package into the command's process (about 3 s) and then waiting
for it to boot (about 5 s on 2 cores, 17 s on a fresh database), in every command. `PrefectApi.start()`
instead points the command at the local server its commands share (flows/server.py): the one already
running on this PREFECT_HOME, or one it starts in the background, which later commands then find. It
does so as soon as the command begins, on a thread, so a server being started boots while the command
imports torch and MLflow; entering the returned object waits until it answers.

That is only possible before Prefect reads its settings, so a process that has already imported Prefect
(a test calling the CLI in-process, a notebook) keeps Prefect's own behaviour.

Flow-run heartbeats are off against the local server: nothing there acts on a missed heartbeat (a killed
command's runs are marked crashed by the next command, tasks/crashed.py), and each flow run would
otherwise wait up to a second at its end for its heartbeat thread to stop.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from flows import server
from mmcore.io import folder_lock


class PrefectApi:
    def __init__(self) -> None:
        self.server: dict | None = None  # the record of the local server (flows/server.py) in use
        self._error: BaseException | None = None
        self._configured = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefect-api", daemon=True)
        self._stack = ExitStack()

    @classmethod
    def start(cls) -> PrefectApi:
        """Finds or starts the local server when no Prefect API is configured. Returns once this process is
        pointed at it; a server being started keeps booting in the background."""
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
            home = Path(settings.home)
            # One server per PREFECT_HOME: commands started together take turns here (not their commands), so
            # one of them starts it and migrates the database, and the others find it.
            with folder_lock(home):
                server.register_client(home)  # before the check: an idle server cannot stop under this command
                record, how = server.running(home), "local server"
                if record is None:
                    record, how = server.start(home), "local server, started now"
                self.server = record
                print(f"Prefect API: {how} on {record['url']} (set PREFECT_API_URL to use a Prefect server; "
                      "`mm server stop` stops this one)", file=sys.stderr, flush=True)
                os.environ["PREFECT_API_URL"] = record["url"]  # for this process and the ones it starts
                from prefect.context import refresh_global_settings_context

                refresh_global_settings_context()
                self._configured.set()
                server.wait_ready(home, record)
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
