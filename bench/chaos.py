"""Chaos: SIGKILLs at random points of a smoke pipeline, each followed by a rerun, to show that a kill loses
and corrupts nothing.

Method (every run is `python -m flows.cli pipeline --preset smoke` with small settings, SETTINGS below, on
synthetic images; each starts from an empty data root and MM_HOME, so it creates its stores and starts a
temporary Prefect server, as a first run does):
  1. reference: one uninterrupted run. Recorded: the sha256 of every file under the data root's
     processed/, features/ and models/ (the catalog's folders), the test metrics and the registered model,
     and when each kill point's log line appeared.
  2. control (skip with --no-control): a second uninterrupted run. Files that differ from the reference
     here differ without any kill (not reproducible byte for byte), and are reported apart.
  3. --kills N kill points, spread over the stages (POINTS: start-up, ingest, pretrain, extract, train,
     evaluate, register). For each, the command is started and its whole process group (the CLI, the
     temporary Prefect server, ingest's decoding processes) is SIGKILLed a seeded random delay after the
     point's log line appears; the delay is uniform over the time the reference run took from that line
     to the next point's. The command is then run once more, to completion, and checked:
       - the rerun exits 0 (the kill is survived);
       - every file under processed/, features/ and models/ is byte-identical to the reference's
         (differing files are listed, relative to the data root; leftovers count as differences);
       - the test metrics equal the reference's;
       - no MLflow run and no Prefect flow run is left RUNNING (the rerun marks the killed ones).
Every run uses the same absolute paths (<work>/live/root and <work>/live/home, moved to <work>/<run name>
afterwards, with its logs), since outputs record absolute paths (the features' manifest names the encoder).

Run (about 35 minutes on 2 shared cores: each smoke run takes 1.5-2.5 min, a killed run part of that):
    .venv/bin/python -m bench.chaos --kills 10 --out bench/results/chaos.json
A quick look (about 10 minutes):
    .venv/bin/python -m bench.chaos --kills 2 --no-control --out /tmp/chaos.json
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench.chaos_proc import Watched, differences, fingerprint, left_running, outcome, run_watched
from bench.machine import header, log, write_results

ROOT = Path(__file__).resolve().parent.parent
# Two pretraining epochs, so that a kill can land between them (the resume path); every head on, one epoch.
SETTINGS = ("pretrain.epochs=2", "heads.epochs=1", "heads.text_epochs=1")


@dataclass(frozen=True)
class Point:
    """A kill point: `pattern` is the log line it follows (None: the command's start); `stage` what it hits."""

    name: str
    stage: str
    pattern: str | None


POINTS = (
    Point("start-up", "startup", None),
    Point("ingest", "ingest", r"for flow 'ingest'"),
    Point("ingest: 1st shard", "ingest", r"ingest: 1/\d+ shards"),
    Point("pretrain", "pretrain", r"for flow 'pretrain'"),
    Point("pretrain: epoch 1", "pretrain", r"Task run 'pretrain-\S+' - epoch 1/"),
    Point("extract", "extract", r"for flow 'extract'"),
    Point("train", "train", r"for flow 'train'"),
    Point("train: caption head", "train", r"caption_epoch 1/"),
    Point("evaluate", "evaluate", r"for flow 'evaluate'"),
    Point("register", "register", r"Task run 'log_evaluation-\S+' - Finished"),
)
END = r"Flow run '[^']+' - Finished in state"  # the last such line is the pipeline's own


@dataclass(frozen=True)
class Setup:
    work: Path
    cmd: list[str]
    env: dict[str, str]
    raw: Path  # the synthetic dataset, shared read-only by every run
    dataset: str
    timeout: float

    @property
    def live(self) -> Path:
        return self.work / "live"


def fresh_state(setup: Setup) -> tuple[Path, Path]:
    """An empty data root (with the raw dataset linked in) and MM_HOME at the live paths."""
    from mmcore.catalog import Catalog

    shutil.rmtree(setup.live, ignore_errors=True)
    link = Catalog.raw_root(setup.live / "root", setup.dataset)
    link.parent.mkdir(parents=True)
    link.symlink_to(setup.raw, target_is_directory=True)
    return setup.live / "root", setup.live / "home"


def keep(setup: Setup, name: str) -> None:
    """Moves the live run aside to <work>/<name>, for a look afterwards."""
    shutil.rmtree(setup.work / name, ignore_errors=True)
    os.replace(setup.live, setup.work / name)


def point_times(run: Watched) -> tuple[dict[str, float], float]:
    """When each kill point's line first appeared in `run` (s since its start), and when it ended."""
    times = {}
    for point in POINTS:
        at = 0.0 if point.pattern is None else next((t for t, line in run.lines if re.search(point.pattern, line)),
                                                     None)
        if at is None:
            sys.exit(f"the reference run never logged {point.pattern!r} (kill point {point.name!r}): the pipeline's "
                     "log lines changed, or a head is off; see its log")
        times[point.name] = round(at, 2)
    ends = [t for t, line in run.lines if re.search(END, line)]
    return times, round(ends[-1] if ends else run.seconds, 2)


def plan(kills: int, seed: int, times: dict[str, float], end: float) -> list[tuple[Point, float]]:
    """`kills` (point, delay) pairs: points spread evenly over POINTS (each in turn beyond len(POINTS)),
    delays uniform over each point's window in the reference run (seeded)."""
    rng, n = random.Random(seed), len(POINTS)
    starts = [times[p.name] for p in POINTS] + [end]
    picks = [int((i + 0.5) * n / kills) if kills <= n else i % n for i in range(kills)]
    return [(POINTS[i], round(rng.uniform(0.0, max(0.0, starts[i + 1] - starts[i])), 2)) for i in picks]


def stage_hit(run: Watched) -> str:
    """The stage that was running when `run` was killed, from the lines it had logged: "<stage> (finished)"
    between a stage's subflow ending and the next stage's start, "done" once the pipeline flow has ended."""
    stage, started, ended = "startup", 0, 0
    for line in run.seen_before(run.killed_at if run.killed_at is not None else run.seconds):
        for point in POINTS:
            if point.pattern is not None and re.search(point.pattern, line):
                stage = point.stage
        started += bool(re.search(r"Beginning (sub)?flow run", line))
        if re.search(END, line):
            ended += 1
            stage = "done" if ended == started else f"{stage.removesuffix(' (finished)')} (finished)"
    return stage


def uninterrupted(setup: Setup, name: str) -> dict:
    """A whole run from an empty state: its files, metrics, registry and timings."""
    root, home = fresh_state(setup)
    log(f"{name}: uninterrupted run ...")
    run = run_watched(setup.cmd, setup.env, setup.live / "run.log", setup.timeout)
    if run.rc != 0:
        keep(setup, name)
        sys.exit(f"the {name} run failed (exit {run.rc}, timed out: {run.timed_out}); see "
                 f"{setup.work / name / 'run.log'}")
    times, end = point_times(run)
    result = {"seconds": round(run.seconds, 1), "point_times_s": times, "end_s": end, "files": fingerprint(root),
              **outcome(home, setup.dataset), "left_running": left_running(home), "survivors": run.survivors}
    keep(setup, name)
    log(f"{name}: {run.seconds:.1f} s, {len(result['files'])} files")
    return result


def _checks(setup: Setup, ref: dict, control_diff: list[str], rerun: Watched) -> dict:
    """What the rerun left, compared with the reference run."""
    root, home = setup.live / "root", setup.live / "home"
    diff = differences(ref["files"], fingerprint(root))
    got = outcome(home, setup.dataset) if rerun.rc == 0 else {"metrics": None, "registry": None}
    metrics, ref_metrics = got["metrics"] or {}, ref["metrics"]
    names = sorted(ref_metrics.keys() | metrics.keys())
    return {"survived": rerun.rc == 0, "differing_files": diff, "identical": not diff,
            "beyond_control": [d for d in diff if d not in control_diff],
            "metrics_equal": got["metrics"] == ref_metrics,
            "metrics_diff": {k: [ref_metrics.get(k), metrics.get(k)] for k in names
                             if ref_metrics.get(k) != metrics.get(k)},
            "registry": got["registry"], "registry_equal": got["registry"] == ref["registry"],
            "left_running": left_running(home)}


def trial(setup: Setup, index: int, point: Point, delay: float, ref: dict, control_diff: list[str]) -> dict:
    """One kill at `point` + `delay` s, then a rerun to completion, then the checks."""
    name = f"kill-{index:02d}"
    fresh_state(setup)
    log(f"{name}: kill {delay:.2f} s after {point.name!r} ...")
    killed = run_watched(setup.cmd, setup.env, setup.live / "killed.log", setup.timeout, point.pattern, delay)
    record = {"run": name, "point": point.name, "delay_s": delay, "stage_hit": stage_hit(killed),
              "killed": killed.killed_at is not None,
              "killed_at_s": None if killed.killed_at is None else round(killed.killed_at, 2),
              "last_line": (killed.seen_before(killed.seconds) or [""])[-1][:200], "first_rc": killed.rc,
              "first_timed_out": killed.timed_out,
              "survivors": killed.survivors, "running_before_rerun": left_running(setup.live / "home")}
    if not record["killed"]:
        log(f"{name}: missed: the run ended (exit {killed.rc}) before the kill")
        keep(setup, name)
        return record
    rerun = run_watched(setup.cmd, setup.env, setup.live / "rerun.log", setup.timeout)
    record["rerun"] = {"rc": rerun.rc, "seconds": round(rerun.seconds, 1), "timed_out": rerun.timed_out,
                       "survivors": rerun.survivors}
    record.update(_checks(setup, ref, control_diff, rerun))
    keep(setup, name)
    log(f"{name}: killed in {record['stage_hit']} at {record['killed_at_s']} s; rerun exit {rerun.rc} in "
        f"{rerun.seconds:.1f} s; {len(record['differing_files'])} differing file(s); metrics equal: "
        f"{record['metrics_equal']}")
    return record


def summarize(trials: list[dict], kills: int) -> dict:
    made = [t for t in trials if t["killed"]]

    def running(t: dict) -> int:
        left = t["left_running"]
        return (left["mlflow_runs"] or 0) + (left["prefect_flow_runs"] or 0)

    return {"kills_planned": kills, "kills_made": len(made), "kills_survived": sum(t["survived"] for t in made),
            "byte_identical": sum(t["identical"] for t in made),
            "identical_beyond_control": sum(not t["beyond_control"] for t in made),
            "metrics_equal": sum(t["metrics_equal"] for t in made),
            "registry_equal": sum(t["registry_equal"] for t in made),
            "runs_left_running": sum(running(t) for t in made),
            "stages_hit": sorted({t["stage_hit"] for t in made})}


def _files(diff: list[str], most: int = 3) -> str:
    shown = ", ".join(f"`{d}`" for d in diff[:most])
    return shown + (f" and {len(diff) - most} more" if len(diff) > most else "")


def markdown(res: dict) -> str:
    """The per-kill table and the totals, as printed and as BENCHMARKS.md shows them."""
    rows = ["| # | kill point (+ delay) | stage hit | killed at (s) | rerun (s) | rerun exit | identical "
            "| metrics equal | left RUNNING | differing files |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["kills"]:
        head = f"| {t['run'][-2:]} | {t['point']} (+{t['delay_s']:.1f} s) | {t['stage_hit']} |"
        if not t["killed"]:
            rows.append(f"{head} missed: ended (exit {t['first_rc']}) before the kill | | | | | | |")
            continue
        left = t["left_running"]
        rows.append(f"{head} {t['killed_at_s']:.1f} | {t['rerun']['seconds']:.1f} | {t['rerun']['rc']} | "
                    f"{'yes' if t['identical'] else 'no'} | {'yes' if t['metrics_equal'] else 'no'} | "
                    f"{left['mlflow_runs']} MLflow, {left['prefect_flow_runs']} Prefect | "
                    f"{_files(t['differing_files'])} |")
    s, made = res["summary"], res["summary"]["kills_made"]
    lines = ["", f"- kills survived: {s['kills_survived']}/{made} (kills made: {made} of {s['kills_planned']})",
             f"- byte-identical outputs: {s['byte_identical']}/{made}",
             f"- metrics equal: {s['metrics_equal']}/{made}",
             f"- registered model as the reference's (versions, @champion): {s['registry_equal']}/{made}",
             f"- runs left RUNNING after the reruns: {s['runs_left_running']}",
             f"- stages hit: {', '.join(s['stages_hit'])}"]
    if res.get("control") is not None:
        diff = res["control"]["differing_files"]
        lines.append(f"- control (an uninterrupted second run): {'identical' if not diff else _files(diff, 5)}; "
                     f"identical apart from those files: {s['identical_beyond_control']}/{made}")
    return "\n".join(rows + lines)


def prepare(args: argparse.Namespace) -> Setup:
    """Generates the synthetic dataset once and builds the command and environment every run uses."""
    sys.path.insert(0, str(ROOT))
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes

    sets = [*SETTINGS, *args.set]
    cfg = load_config(args.preset, dict(s.split("=", 1) for s in sets))  # a bad --set fails here, before any run
    work = Path(args.work or tempfile.mkdtemp(prefix="mm-bench-chaos-")).resolve()
    raw = work / "raw" / cfg.dataset
    if not raw.exists():
        generate_shapes(raw, args.images, seed=0, image_size=cfg.ingest.image_size, test_images=args.images // 3)
    live = work / "live"
    env = {**os.environ, "MM_HOME": str(live / "home"), "PREFECT_HOME": str(live / "home" / "prefect"),
           "PYTHONUNBUFFERED": "1"}  # each log line as it is written, so that a trigger fires on time
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "MM_ARTIFACT_ROOT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--preset", args.preset,
           "--set", f"data_root={live / 'root'}", *(x for s in sets for x in ("--set", s))]
    return Setup(work, cmd, env, raw, cfg.dataset, args.timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kill points (spread over the stages)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--images", type=int, default=90, help="synthetic images (a third are the test split)")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another config override")
    parser.add_argument("--work", help="folder for the runs (default: a new temporary folder); kept afterwards")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as hung")
    parser.add_argument("--no-control", dest="control", action="store_false", help="skip the control run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.json"), help="results (JSON)")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error(f"--kills must be >= 1, got {args.kills}")
    start = time.perf_counter()
    setup = prepare(args)
    log(f"work folder: {setup.work}\ncommand: {' '.join(setup.cmd)}")
    ref = uninterrupted(setup, "reference")
    control = None
    if args.control:
        control = uninterrupted(setup, "control")
        control = {"differing_files": differences(ref["files"], control["files"]),
                   "metrics_equal": control["metrics"] == ref["metrics"], "seconds": control["seconds"]}
    control_diff = control["differing_files"] if control else []
    trials = [trial(setup, i + 1, point, delay, ref, control_diff)
              for i, (point, delay) in enumerate(plan(args.kills, args.seed, ref["point_times_s"], ref["end_s"]))]
    versions = {name: version(name) for name in ("torch", "prefect", "mlflow")}
    res = {**header("bench.chaos", versions), "settings": {"preset": args.preset, "overrides": [*SETTINGS, *args.set],
                                                           "images": args.images, "seed": args.seed},
           "work": str(setup.work), "reference": ref, "control": control,
           "summary": summarize(trials, args.kills), "kills": trials}
    print(markdown(res), flush=True)
    write_results(res, start, Path(args.out))
    log(f"results: {args.out}; runs and logs: {setup.work}")


if __name__ == "__main__":
    main()
