"""Start latency of `mm` commands: how long before their first lines, before and after this change, side by side.

    python -m bench.start_latency --out bench/results/start_latency.json      # about 6 minutes on 2 cores

A smoke pipeline (200 synthetic images) is run once in a work folder, untimed, so every stage has a valid
cached result. Then each measurement is a fresh `python -m flows.cli ...` process, timed by the lines it
prints: the stage line (`train: <features> -> <heads>`, new), `Prefect API: ...`, Prefect's `Beginning flow
run`, and its exit. The same commands run from a checkout of --before (a git revision; the code before the
shared local server) with the same virtualenv, interleaved with the current code, on the same data root and
MM_HOME. Commands:

- `train` of the smoke data, a cached result: a stage command on a warm folder. For the current code, with
  the local server already running (as within 15 minutes of another command) and with it stopped first.
- `pipeline --preset nope`: a config error, answered before any server.
- `--help`.

`import flows.cli` is timed alone (-X importtime's total) for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import log, wait_idle

REPO = Path(__file__).resolve().parent.parent
MARKS = {"stage": "train: ", "api": "Prefect API:", "flow": "Beginning flow run", "error": "error:"}


def timed_lines(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Seconds from start to the first line holding each mark, and to exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, float] = {}
    lines = []
    for line in proc.stdout:
        now = time.perf_counter() - started
        lines.append(line)
        seen.setdefault("first_line", now)
        for name, mark in MARKS.items():
            if mark in line:
                seen.setdefault(name, now)
    seen["exit"] = time.perf_counter() - started
    if proc.wait() not in (0, 2):
        raise RuntimeError("".join(lines[-30:]))
    return {k: round(v, 2) for k, v in seen.items()}


def prepare(work: Path, env: dict[str, str]) -> list[str]:
    """The smoke data and a finished pipeline in `work` (cached); returns the train command's arguments."""
    args = ["--preset", "smoke", "--dataset", "shapes", "--set", f"data_root={work / 'data'}"]
    if not (work / "data" / "raw" / "shapes").is_dir():
        subprocess.run([sys.executable, "-m", "flows.cli", "data", "synth", "--out", str(work / "data/raw/shapes"),
                        "--images", "200", "--test-images", "60"], cwd=REPO, env=env, check=True)
    subprocess.run([sys.executable, "-m", "flows.cli", "pipeline", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return args


def import_seconds(code: Path, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import flows.cli"], cwd=code, env=env,
                         capture_output=True, text=True, check=True).stderr.strip().splitlines()
    return round(int(out[-1].split("|")[1]) / 1e6, 2)


def checkout(rev: str, where: Path) -> Path:
    if not where.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(where), rev], cwd=REPO, check=True,
                       capture_output=True)
    return where


def measure(codes: dict[str, Path], env: dict[str, str], train: list[str], rounds: int) -> dict:
    results: dict[str, list[dict]] = {}
    for r in range(rounds):
        order = list(codes.items()) if r % 2 == 0 else list(reversed(codes.items()))
        for name, code in order:
            e = {**env, "PYTHONPATH": str(code)}
            cli = [sys.executable, "-m", "flows.cli"]
            wait_idle(30)
            stage = [*cli, "train", *train]
            if name == "now":
                subprocess.run([*cli, "server", "stop"], cwd=code, env=e, capture_output=True)
                results.setdefault("now: train, server stopped", []).append(timed_lines(stage, code, e))
                wait_idle(30)
                results.setdefault("now: train, server running", []).append(timed_lines(stage, code, e))
            else:
                results.setdefault(f"{name}: train", []).append(timed_lines(stage, code, e))
            for label, args in (("config error", ["pipeline", "--preset", "nope"]), ("--help", ["--help"])):
                results.setdefault(f"{name}: {label}", []).append(timed_lines([*cli, *args], code, e))
        log(f"round {r + 1}/{rounds} done")
    return {k: {"runs": v, "median": {m: statistics.median(x[m] for x in v) for m in v[0]}} for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="cc55a92", help="the revision to compare with")
    parser.add_argument("--work", default="/tmp/mmcore-start-bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "start_latency.json"))
    args = parser.parse_args()
    work = Path(args.work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MM_"))}
    env.update(MM_HOME=str(work / "mm"), PYTHONPATH=str(REPO))
    train = prepare(work, env)
    codes = {"before": checkout(args.before, work / "before"), "now": REPO}
    env_before = {**env, "PYTHONPATH": str(codes["before"])}
    subprocess.run([sys.executable, "-m", "flows.cli", "train", *train], cwd=codes["before"], env=env_before,
                   check=True, stdout=subprocess.DEVNULL)  # its own cached result (its code digest differs)
    imports = {name: import_seconds(code, {**env, "PYTHONPATH": str(code)}) for name, code in codes.items()}
    result = {"imports_s": imports, "commands": measure(codes, env, train, args.rounds), "before": args.before}
    subprocess.run([sys.executable, "-m", "flows.cli", "server", "stop"], cwd=REPO, env=env, capture_output=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    log(json.dumps({k: v["median"] for k, v in result["commands"].items()}, indent=1))
    log(f"imports: {result['imports_s']}; written to {out}")


if __name__ == "__main__":
    main()
