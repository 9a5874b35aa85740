"""Real servers for tests, on 127.0.0.1: a free port, a process started in its own session, waiting until it
answers, and stopping it (its whole process group) by PID. Also a moto S3 server and the AWS environment for it.

Imported as `from tests.servers import ...`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: IO[bytes] | None) -> str:
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90, log: IO[bytes] | None = None,
              any_status: bool = False) -> float:
    """Polls `url` until it answers 200 (any HTTP answer with `any_status`); returns the seconds waited.

    Fails early, with the end of the log, if the process exits.
    """
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except urllib.error.HTTPError:
            if any_status:
                return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout} s:\n{_tail(log)}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group the process leads, then SIGKILL if it is still there after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def serving(cmd: Sequence[str], url: str, log_path: Path | None = None, env: dict | None = None,
            timeout: float = 90, any_status: bool = False, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Starts `cmd` in a new session, waits until `url` answers, yields the process and stops it on exit.

    The log goes to a file, never a pipe (a request log would fill the pipe and block the server).
    """
    log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        proc.startup_s = wait_http(url, proc, timeout, log, any_status)  # type: ignore[attr-defined]
        yield proc
    finally:
        stop(proc)
        log.close()


@contextmanager
def moto_server(timeout: float = 20.0) -> Iterator[str]:
    """A moto S3 server in a subprocess; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], endpoint,
                 timeout=timeout, any_status=True):
        yield endpoint


def aws_vars(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint for the moto server at `endpoint` (no profile or config file read)."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@contextmanager
def aws_env(endpoint: str) -> Iterator[None]:
    """The AWS environment pointing at `endpoint`, restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for var in AWS_VARS:
            mp.delenv(var, raising=False)
        for var, value in aws_vars(endpoint).items():
            mp.setenv(var, value)
        yield
