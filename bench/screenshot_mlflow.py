"""A PNG of the MLflow UI's experiment page (its runs), or of a registered model version's page (its model
card and metrics), taken with headless Chromium: a look at the runs without opening a browser.

Starts `mlflow server` on 127.0.0.1 for the tracking store (default: the project's embedded store, as
`mm home` prints it), opens `#/experiments/<id>/runs` (the runs table; without `/runs` MLflow 3 opens a
GenAI traces overview), writes the PNG and stops the server. An http(s)
tracking URI is an already running server: it is screenshotted as is.

    .venv/bin/python bench/screenshot_mlflow.py                                  # newest experiment, mlflow-runs.png
    .venv/bin/python bench/screenshot_mlflow.py --experiment smoke --out smoke.png
    .venv/bin/python bench/screenshot_mlflow.py --tracking-uri sqlite:///other/mlflow.db
    .venv/bin/python bench/screenshot_mlflow.py --tracking-uri http://127.0.0.1:5000
    .venv/bin/python bench/screenshot_mlflow.py --model mmcore-demo --out card.png   # @champion's version page
    .venv/bin/python bench/screenshot_mlflow.py --model mmcore-demo --version 2 --dom card.html

Needs a Chromium binary (chromium, chromium-browser or google-chrome): `sudo apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"No Chromium found (looked for {', '.join(BROWSERS)} on PATH). Install it with "
                     "`sudo apt-get install chromium` (Debian/Ubuntu) and run this again.")


def default_tracking_uri() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from flows.env import configure  # the embedded defaults; MLFLOW_TRACKING_URI wins when set

    configure()
    return os.environ["MLFLOW_TRACKING_URI"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tracking_uri: str, log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`mlflow server` for the store, in its own process group; returns it and its URL once /health answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Artifacts are only read here (the UI's artifact view): proxied from the experiments' own locations.
    cmd = [MLFLOW, "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:  # not listening yet (URLError is an OSError)
            if time.monotonic() > deadline:
                stop_server(proc)
                raise SystemExit(f"mlflow server did not answer on {url}/health within {timeout} s:\n"
                                 f"{log.read_text()[-3000:]}") from None
            time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it runs uvicorn workers), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def pick_experiment(server_url: str, name: str | None) -> str:
    """The id of experiment `name`, or of the most recently updated experiment that has runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server_url)
    if name:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise SystemExit(f"No experiment named {name!r}; the store has {known}")
        return exp.experiment_id
    experiments = client.search_experiments(order_by=["last_update_time DESC"])
    for exp in experiments:
        if client.search_runs([exp.experiment_id], max_results=1):
            return exp.experiment_id
    raise SystemExit(f"No experiment with runs in {server_url}: run a pipeline first (`mm pipeline --preset smoke`)")


def model_version_page(server_url: str, model: str, version: str | None) -> str:
    """The UI address of version `version` of registered model `model` (default: its @champion)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if version is None:
        try:
            version = str(MlflowClient(tracking_uri=server_url).get_model_version_by_alias(model, "champion").version)
        except MlflowException as exc:
            raise SystemExit(f"No @champion of registered model {model!r}: {exc.message.splitlines()[0]}") from None
    return f"{server_url}/#/models/{model}/versions/{version}"


def _chromium(browser: str, profile: str, width: int, height: int, budget_ms: int, *args: str) -> list[str]:
    cmd = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
           f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", *args]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return cmd


def screenshot(browser: str, url: str, out: Path, width: int, height: int, budget_ms: int) -> None:
    """Headless Chromium renders `url` (a single-page app: JavaScript gets `budget_ms` of virtual time)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mm-chromium-") as profile:
        cmd = _chromium(browser, profile, width, height, budget_ms, f"--screenshot={out.resolve()}", url)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 120)
    if res.returncode != 0 or not out.is_file():
        raise SystemExit(f"{browser} exited with {res.returncode} and wrote no {out}:\n{res.stderr[-2000:]}")


def rendered_dom(browser: str, url: str, out: Path, width: int, height: int, budget_ms: int) -> None:
    """The page's DOM after its JavaScript ran (what the screenshot shows, as HTML), written to `out`."""
    with tempfile.TemporaryDirectory(prefix="mm-chromium-") as profile:
        cmd = _chromium(browser, profile, width, height, budget_ms, "--dump-dom", url)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 120)
    if res.returncode != 0 or not res.stdout:
        raise SystemExit(f"{browser} exited with {res.returncode} and printed no page:\n{res.stderr[-2000:]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(res.stdout, encoding="utf-8")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", help="store or server to show (default: the project's, see `mm home`)")
    ap.add_argument("--experiment", help="experiment name (default: the most recently updated one with runs)")
    ap.add_argument("--model", help="show this registered model's version page instead of the runs")
    ap.add_argument("--version", help="the version of --model (default: its @champion)")
    ap.add_argument("--out", type=Path, default=Path("mlflow-runs.png"))
    ap.add_argument("--dom", type=Path, help="also write the rendered page's HTML here")
    ap.add_argument("--window-size", default="1600,1000", help="WIDTH,HEIGHT in pixels")
    ap.add_argument("--budget-ms", type=int, default=15000, help="virtual time for the page's JavaScript")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.window_size.split(","))
    browser = find_browser()  # before starting anything
    uri = args.tracking_uri or default_tracking_uri()

    proc = None
    with tempfile.TemporaryDirectory(prefix="mm-mlflow-ui-") as tmp:
        try:
            if uri.startswith(("http://", "https://")):
                base = uri.rstrip("/")
            else:
                started = time.monotonic()
                proc, base = start_server(uri, Path(tmp) / "server.log")
                print(f"mlflow server for {uri} up on {base} in {time.monotonic() - started:.1f} s")
            url = (model_version_page(base, args.model, args.version) if args.model else
                   f"{base}/#/experiments/{pick_experiment(base, args.experiment)}/runs")  # the runs table
            screenshot(browser, url, args.out, width, height, args.budget_ms)
            if args.dom:
                rendered_dom(browser, url, args.dom, width, height, args.budget_ms)
        finally:
            if proc is not None:
                stop_server(proc)
    print(f"{url} -> {args.out}")
    return args.out


if __name__ == "__main__":
    main()
