"""Ingest against a peer: HF `datasets` `map(num_proc=N)` + `to_parquet` on the same photo-like JPEGs.

From the repository root:

    .venv/bin/python -m bench.ingest_peer    # 2,000 images, 64 and 224 px, 2 rounds: ~10 min on 2 cores
    .venv/bin/python -m bench.ingest_peer --images 200 --rounds 1 --idle-wait 5   # smoke run, ~5 min

The first full run also generates the 2,000 JPEGs (~100 s; cached with bench.ingest_bench's).

Needs HF `datasets` in the virtualenv, for this benchmark only (it is not a project dependency):
`.venv/bin/pip install datasets` (measured with datasets 5.2.0).

The images are bench/ingest_datasets.py's photo-like 640x480 JPEGs (q90, fixed seed, canonical
`annotations.jsonl` with one caption each), generated once and cached under --work (not timed). At each
size (--sizes) every timed run is a fresh process, and every run writes into a fresh folder:

- ours_cli: `mm ingest --source <photos> --format jsonl --dataset peerbench --workers N --set data_root=<tmp>
  --set ingest.image_size=S` with MM_HOME at a warm home (one untimed 20-image ingest there first created its
  Prefect database and MLflow store). End to end: the command's wall clock, start-up and exit included.
  `mm` commands share a local Prefect server that outlives them (flows/server.py, stopped after 15 idle min),
  so a warm run finds it running, as a command run again within 15 minutes does.
- ours_cli_cold: the same once per size on the warm home with its server stopped first (untimed): the
  command starts one, as after 15 idle minutes.
- ours_cli_fresh: the same once per size with a new, empty MM_HOME (the first run on a machine: Prefect
  database and MLflow store created). Every server the benchmark started is stopped (`mm server stop`).
- ours_lib: the ingest stage as a library call in a fresh Python process, no Prefect, no MLflow: the body of
  `mmcore.stages.ingest.run(cfg, cat, workers=N)` timed step by step (imports, check + plan, pool + shards,
  finish = duplicates across shards, tokenizer, token shards, manifest). Shard work = pool + shards.
- peer: a fresh Python process doing `load_dataset("json")` of the same annotations, then `map(num_proc=N)` of
  open, EXIF transpose, RGB, shortest side to S + centre crop (bicubic; ingest's default `resize: crop`), PNG
  encode, then `to_parquet`, with an empty HF cache (no cached Arrow files, no cached map). End to end: the
  process's wall clock, imports included; shard work = map + to_parquet. By default the peer decodes the full
  JPEG as a plain Pillow user would; `--peer-tuned` gives it ingest's two speed-ups too (JPEG draft decoding
  at a reduced scale, `reducing_gap=3.0`).

Runs alternate ours/peer within a round, the order reversed every other round. Before each timing the
benchmark waits (at most --idle-wait s) for other processes to go quiet and records their load during the run
(bench/machine.py). Ratios are throughputs, peer seconds / our seconds, of the medians over rounds: > 1 means
we are faster. Results go to --out as JSON ("smoke": true when --images < 2000).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest_datasets import PHOTO_H, PHOTO_W, photo_dataset
from bench.machine import header, log, timed, write_results
from mmcore.catalog import MANIFEST

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "ingest_peer.json"
DATASET = "peerbench"
WARMUP_IMAGES = 20
ENV_DROP = ("PREFECT_", "MLFLOW_", "MM_", "HF_")  # the caller's stores and servers must not leak into a run
KINDS = ("ours_cli", "peer", "ours_lib")  # one round's order (reversed every other round)
ONCE = ("ours_cli_fresh", "ours_cli_cold")  # once per size, before the rounds
FULL_IMAGES = 2000


# --- the peer: what a `datasets` user writes for the same job --------------------------------------------


def peer_image(example: dict, root: str, size: int, tuned: bool) -> dict:
    """One record: open, EXIF transpose, RGB, shortest side to `size` and centre crop (bicubic), PNG bytes."""
    from PIL import Image, ImageOps

    with Image.open(os.path.join(root, example["image"])) as img:
        width, height = img.size
        if tuned:
            img.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, as ingest does
        frame = ImageOps.exif_transpose(img).convert("RGB")
    w, h = frame.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # torchvision Resize(size)
    frame = frame.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0 if tuned else None)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)  # torchvision CenterCrop(size)
    frame = frame.crop((left, top, left + size, top + size))
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    return {"png": buf.getvalue(), "width": width, "height": height}


def peer_child(jsonl: Path, out: Path, size: int, workers: int, tuned: bool) -> dict:
    """The peer's whole job in this fresh process; the seconds of each step."""
    t0 = time.perf_counter()
    import datasets

    datasets.disable_progress_bars()
    t1 = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(out / "hf-cache"))
    t2 = time.perf_counter()
    ds = ds.map(peer_image, fn_kwargs={"root": str(jsonl.parent), "size": size, "tuned": tuned}, num_proc=workers)
    t3 = time.perf_counter()
    ds.to_parquet(str(out / "peer.parquet"))
    t4 = time.perf_counter()
    return {"records": len(ds), "import_s": t1 - t0, "load_s": t2 - t1, "map_s": t3 - t2, "parquet_s": t4 - t3,
            "stage_s": t4 - t1, "shard_work_s": t4 - t2, "datasets": datasets.__version__}


# --- ours as a library call: the ingest stage without Prefect or MLflow ----------------------------------


def ours_child(source: Path, out: Path, size: int, workers: int) -> dict:
    """`mmcore.stages.ingest.run`'s steps in this fresh process, each timed; shard work = pool + shards."""
    from contextlib import nullcontext

    t0 = time.perf_counter()
    from mmcore.catalog import Catalog
    from mmcore.config import load_config
    from mmcore.data.ingest import process_pool
    from mmcore.stages import ingest as S

    t1 = time.perf_counter()
    cfg = load_config("demo", {"data_root": str(out / "data"), "ingest.image_size": size,
                               "ingest.source": str(source), "ingest.format": "jsonl"}, dataset=DATASET)
    cat = Catalog.from_config(cfg)
    S.check_source(cfg, cat)
    with S.lock(cat):
        planned = S.plan(cfg, cat)
        t2 = time.perf_counter()
        with process_pool(workers) if workers > 1 else nullcontext() as pool:
            shards = [S.ingest_shard(planned.path, work, workers, pool) for work in planned.work]
        t3 = time.perf_counter()
        result = S.finish(cfg, cat, planned.path, shards)
    t4 = time.perf_counter()
    return {"records": result.accepted, "import_s": t1 - t0, "plan_s": t2 - t1, "shards_s": t3 - t2,
            "finish_s": t4 - t3, "stage_s": t4 - t1, "shard_work_s": t3 - t2}


# --- running one measurement in a fresh process ----------------------------------------------------------


def child_env(home: Path | None, hf_home: Path) -> dict[str, str]:
    """The caller's environment without its Prefect, MLflow, MM and HF settings; MM_HOME = `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP)}
    env.update(HF_HOME=str(hf_home), HF_DATASETS_CACHE=str(hf_home / "datasets"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    if home is not None:
        env["MM_HOME"] = str(home)
    return env


def call(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Runs `cmd` in a session of its own and returns its stdout; on a timeout the whole session is killed
    (the Prefect server `mm` starts included)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{err[-3000:]}")
    return out


def mm() -> str:
    return str(Path(sys.executable).parent / "mm")


def stop_server(home: Path, timeout: float) -> None:
    """Stops the local Prefect server of MM_HOME `home`, if one runs (untimed)."""
    if home.exists():
        call([mm(), "server", "stop"], child_env(home, home / "hf"), home, timeout)


def mm_command(source: Path, data_root: Path, size: int, workers: int) -> list[str]:
    """The real command line of our end-to-end runs."""
    return [mm(), "ingest", "--source", str(source), "--format", "jsonl",
            "--dataset", DATASET, "--workers", str(workers), "--set", f"data_root={data_root}",
            "--set", f"ingest.image_size={size}"]


def command(kind: str, args: argparse.Namespace, source: Path, run_dir: Path, size: int) -> list[str]:
    """The command line of one measurement of `kind` (KINDS or ONCE)."""
    if kind.startswith("ours_cli"):
        return mm_command(source, run_dir / "data", size, args.workers)
    child = "peer" if kind == "peer" else "ours"
    return [sys.executable, "-m", "bench.ingest_peer", "--child", child, str(source), str(run_dir), str(size),
            str(args.workers)] + (["--peer-tuned"] if args.peer_tuned else [])


def manifest_records(data_root: Path) -> int:
    """The accepted records of the one dataset an `mm ingest` run wrote under `data_root`."""
    manifests = list((data_root / "processed" / DATASET).glob(f"*/{MANIFEST}"))
    if len(manifests) != 1:
        raise RuntimeError(f"expected one manifest under {data_root}, found {manifests}")
    return json.loads(manifests[0].read_text())["accepted"]


def measure(kind: str, args: argparse.Namespace, source: Path, size: int, label: str) -> dict:
    """One timed run of `kind` at `size` px in a fresh process and a fresh output folder (removed afterwards)."""
    run_dir = args.work / "runs" / kind
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    home = run_dir / "mm-home" if kind == "ours_cli_fresh" else args.work / "mm-home-warm"
    env = child_env(home if kind.startswith("ours_cli") else None, run_dir / "hf")
    cwd = run_dir if kind.startswith("ours_cli") else REPO
    if kind == "ours_cli_cold":
        stop_server(home, args.timeout)
    try:
        with timed(args.idle_wait, pool=True) as t:
            out = call(command(kind, args, source, run_dir, size), env, cwd, args.timeout)
    finally:
        if kind == "ours_cli_fresh":
            stop_server(home, args.timeout)
    if kind.startswith("ours_cli"):
        child = {"records": manifest_records(run_dir / "data")}
    else:
        child = json.loads(out.strip().splitlines()[-1])
    if child["records"] != args.images:
        raise RuntimeError(f"{kind} at {size} px: {child['records']} of {args.images} records written")
    shutil.rmtree(run_dir, ignore_errors=True)
    steps = {k: round(v, 3) for k, v in child.items() if k.endswith("_s")}
    log(f"  {label} {size:3d} px {kind:15s} {t.seconds:7.2f} s  (CPU of the process tree >= {t.pool_cpu_s:.1f} s; "
        f"others {t.before:.2f} cores before, <= {t.others:.2f} during) {steps or ''}")
    return {"seconds": round(t.seconds, 3), "tree_cpu_s": round(t.pool_cpu_s, 2),
            "others_cores": round(t.others, 2), "others_cores_before": round(t.before, 2), **steps}


# --- the benchmark ---------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> tuple[Path, float]:
    """The cached photos (page cache warmed, untimed), and a warm MM_HOME made by one untimed tiny ingest."""
    root = photo_dataset(args.work, args.images)
    jpeg_bytes = sum(len(p.read_bytes()) for p in (root / "images").iterdir())  # read once: warm page cache
    tiny = photo_dataset(args.work, WARMUP_IMAGES)
    home = args.work / "mm-home-warm"
    stop_server(home, args.timeout)  # a server an interrupted run of the benchmark left
    shutil.rmtree(home, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(dir=args.work))
    t0 = time.perf_counter()
    call(mm_command(tiny, scratch / "data", 64, args.workers), child_env(home, scratch / "hf"), scratch, args.timeout)
    log(f"warm MM_HOME {home}: a {WARMUP_IMAGES}-image ingest on an empty home took "
        f"{time.perf_counter() - t0:.1f} s (not timed)")
    shutil.rmtree(scratch, ignore_errors=True)
    return root, round(jpeg_bytes / args.images / 1e3, 1)


def run_size(args: argparse.Namespace, root: Path, size: int) -> dict[str, list[dict]]:
    """Every measurement at `size` px: ONCE's end to end runs, then --rounds interleaved rounds."""
    runs: dict[str, list[dict]] = {kind: [] for kind in (*KINDS, *ONCE)}
    for kind in ONCE:
        runs[kind].append(measure(kind, args, root, size, "once"))
    for r in range(args.rounds):
        order = KINDS if r % 2 == 0 else KINDS[::-1]
        for kind in order:
            runs[kind].append(measure(kind, args, root, size, f"round {r + 1}/{args.rounds}"))
    return runs


def med(runs: list[dict], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in runs)


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Medians over rounds, the throughput ratios (peer s / our s), and where our end-to-end time goes."""
    ours, peer, lib = runs["ours_cli"], runs["peer"], runs["ours_lib"]
    seconds = {
        "end_to_end": (med(ours), med(peer)),
        "end_to_end_cold_server": (med(runs["ours_cli_cold"]), med(peer)),
        "end_to_end_fresh_home": (med(runs["ours_cli_fresh"]), med(peer)),
        "stage_in_process": (med(lib, "stage_s"), med(peer, "stage_s")),
        "shard_work": (med(lib, "shard_work_s"), med(peer, "shard_work_s")),
    }
    best = {"end_to_end": (min(r["seconds"] for r in ours), min(r["seconds"] for r in peer)),
            "shard_work": (min(r["shard_work_s"] for r in lib), min(r["shard_work_s"] for r in peer))}
    ours_steps = {k: round(med(lib, k), 2) for k in ("import_s", "plan_s", "shards_s", "finish_s")}
    return {
        "median_seconds": {k: {"ours": round(o, 2), "peer": round(p, 2)} for k, (o, p) in seconds.items()},
        "ratio": {k: round(p / o, 3) for k, (o, p) in seconds.items()},
        "ratio_of_bests": {k: round(p / o, 3) for k, (o, p) in best.items()},
        "ours_breakdown_s": {"cli_end_to_end": round(med(ours), 2), "library_process": round(med(lib), 2),
                             "cli_minus_library_process": round(med(ours) - med(lib), 2),
                             "process_start_and_exit": round(med(lib) - med(lib, "import_s")
                                                             - med(lib, "stage_s"), 2), **ours_steps},
        "peer_steps_s": {k: round(med(peer, k), 2) for k in ("import_s", "load_s", "map_s", "parquet_s")},
    }


def tables(res: dict) -> str:
    """The markdown tables of the results."""
    out = [f"{res['images']} photo-like {res['image_size']} JPEGs, {res['workers']} processes each side, "
           f"medians of {res['rounds']} round(s); ratio = peer s / our s (> 1: we are faster)\n",
           "| px | measure | ours s | peer s | ratio |", "|---|---|---|---|---|"]
    labels = {"end_to_end": "end to end, warm MM_HOME", "end_to_end_cold_server": "end to end, server stopped (1 run)",
              "end_to_end_fresh_home": "end to end, fresh MM_HOME (1 run)",
              "stage_in_process": "stage in-process (no imports)", "shard_work": "shard work"}
    for size, s in res["sizes"].items():
        for key, label in labels.items():
            m = s["median_seconds"][key]
            out.append(f"| {size} | {label} | {m['ours']:.2f} | {m['peer']:.2f} | {s['ratio'][key]:.2f}x |")
    out += ["", "| px | mm ingest | library process | CLI - library | imports | plan | pool + shards | finish |",
            "|---|---|---|---|---|---|---|---|"]
    for size, s in res["sizes"].items():
        b = s["ours_breakdown_s"]
        out.append(f"| {size} | {b['cli_end_to_end']:.1f} | {b['library_process']:.1f} | "
                   f"{b['cli_minus_library_process']:.1f} | {b['import_s']:.1f} | {b['plan_s']:.1f} | "
                   f"{b['shards_s']:.1f} | {b['finish_s']:.1f} |")
    return "\n".join(out + [""])


def run(args: argparse.Namespace) -> dict:
    """Prepare, then every size in turn; the results with their summaries and the goal."""
    from PIL import Image

    res = header("bench.ingest_peer", {"pillow": Image.__version__, "datasets": _datasets_version()})
    res.update({"smoke": args.images < FULL_IMAGES, "images": args.images, "image_size": f"{PHOTO_W}x{PHOTO_H}",
                "workers": args.workers, "rounds": args.rounds, "peer_tuned": args.peer_tuned})
    try:
        root, res["jpeg_kb_mean"] = prepare(args)
        res["sizes"], res["runs"] = measure_sizes(args, root)
    finally:
        stop_server(args.work / "mm-home-warm", args.timeout)
    top = str(max(args.sizes))
    res["goal"] = f">= 1.0x the peer end to end at {top} px (median of rounds, warm MM_HOME)"
    res["goal_met"] = res["sizes"][top]["ratio"]["end_to_end"] >= 1.0
    return res


def measure_sizes(args: argparse.Namespace, root: Path) -> tuple[dict, dict]:
    """Every size in turn: the summaries and the runs, by size."""
    sizes, runs = {}, {}
    for size in args.sizes:
        log(f"{size} px")
        runs[str(size)] = run_size(args, root, size)
        sizes[str(size)] = summarise(runs[str(size)])
    return sizes, runs


def _datasets_version() -> str:
    try:
        from importlib.metadata import version

        return version("datasets")
    except Exception as exc:  # PackageNotFoundError: say how to get it, before any work
        raise SystemExit("this benchmark needs HF datasets: .venv/bin/pip install datasets") from exc


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=FULL_IMAGES, help="photo-like 640x480 JPEGs")
    parser.add_argument("--sizes", default="64,224", help="comma-separated output sides (px)")
    parser.add_argument("--workers", type=int, default=2, help="processes each side (--workers, num_proc)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size")
    parser.add_argument("--peer-tuned", action="store_true", help="give the peer JPEG draft decoding and "
                                                                  "reducing_gap too, as ingest has")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for a quiet machine before each timing")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed to one run")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-ingest-bench",
                        help="where generated datasets are cached (shared with bench.ingest_bench) and runs go")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=5, metavar=("KIND", "SOURCE", "OUT", "SIZE", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = sorted(int(s) for s in str(args.sizes).split(","))
    return args


def main() -> None:
    args = parse_args()
    if args.child:  # one measurement, in the fresh process `measure` started: its step times as a JSON line
        kind, source, out, size, workers = args.child
        fn = {"peer": lambda: peer_child(Path(source) / "annotations.jsonl", Path(out), int(size), int(workers),
                                         args.peer_tuned),
              "ours": lambda: ours_child(Path(source), Path(out), int(size), int(workers))}[kind]
        print(json.dumps(fn()))
        return
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = run(args)
    write_results(res, start, args.out)
    print()
    print(tables(res))
    print(f"goal {res['goal']}: {'met' if res['goal_met'] else 'NOT met'}" + (" (smoke run)" if res["smoke"] else ""))
    log(f"done in {res['total_seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
