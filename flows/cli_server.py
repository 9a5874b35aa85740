"""`mm setup` and `mm server ...`: the embedded stores, and the local Prefect server commands share."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_options import console

server_app = typer.Typer(help="The local Prefect server `mm` commands share when no Prefect API is configured: "
                              "started by the first command that runs a flow, stopped after MM_SERVER_IDLE_S "
                              "seconds (default 900) without a command.", no_args_is_help=True)


def _prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def setup(keep: Annotated[bool, typer.Option("--keep", help="leave the local Prefect server running for the "
                                             "next command")] = False) -> None:
    """Create the embedded stores now (Prefect's database through the local server, and MLflow's), so the
    first run does not wait for them. Nothing to do for a configured Prefect server or MLflow server."""
    from flows.api import PrefectApi

    started = time.perf_counter()
    api = PrefectApi.start()
    from tasks import store

    store.ensure()
    console.print(f"MLflow store: {os.environ['MLFLOW_TRACKING_URI']}", highlight=False)
    with api:
        pass
    if api.server is not None and not keep:
        from flows import server

        server.stop(_prefect_home())
    console.print(f"Prefect API: {api.server['url'] if api.server else os.environ.get('PREFECT_API_URL')} "
                  f"({'left running' if keep or api.server is None else 'database ready, server stopped'}); "
                  f"set up in {time.perf_counter() - started:.1f} s", highlight=False)


@server_app.command("status")
def status() -> None:
    """Where the local server is, and how many commands use it."""
    from flows import server

    home = _prefect_home()
    record = server.running(home)
    if record is None:
        console.print(f"no local Prefect server is running for {home}", highlight=False)
        return
    up = "answers" if server.healthy(record["url"]) else "does not answer"
    console.print(f"local Prefect server on {record['url']} (pid {record['pid']}, {up}), {server.live_clients(home)} "
                  f"command(s) using it; it stops {server.idle_s():.0f} s after the last one ends", highlight=False)


@server_app.command("stop")
def stop() -> None:
    """Stop the local server now (a command that needs one later starts it again)."""
    from flows import server

    record = server.stop(_prefect_home())
    console.print(f"stopped the local Prefect server on {record['url']}" if record
                  else "no local Prefect server was running", highlight=False)
