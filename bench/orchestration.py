"""Orchestration overhead and cached reruns, side by side in one run on the same data.

Three runs, each a fresh process with its own data root (the raw dataset is shared, read-only):
  1. direct:  the stage functions called in order without Prefect or MLflow (`python -m bench.direct`);
  2. prefect: the pipeline flow (`mm pipeline`), with Prefect's embedded API and MLflow on SQLite, so
              its time includes Prefect's start-up, every MLflow call and the model registration;
  3. rerun:   the same pipeline again with nothing changed, which Prefect's cache should answer.
Goals (BENCHMARKS.md): prefect / direct <= 1.10 and rerun / prefect <= 0.05.

Run (the demo data and preset: about 17 minutes on 2 cores):
    .venv/bin/python -m bench.orchestration --preset demo --out bench/results/orchestration.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--images", type=int, default=3000, help="synthetic images when the raw data is missing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from mmcore.catalog import Catalog
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes
    from mmcore.io import write_json

    cfg = load_config(args.preset, dict(s.split("=", 1) for s in args.set))
    work = Path(tempfile.mkdtemp(prefix="mm-bench-orch-"))
    raw = Catalog.raw_root(work, cfg.dataset)  # generated once, linked into each run's data root
    generate_shapes(raw, args.images, seed=0, image_size=cfg.ingest.image_size,
                    test_images=min(1000, args.images // 3))
    env = {**os.environ, "MM_HOME": str(work / "home"), "PREFECT_HOME": str(work / "home" / "prefect")}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "MM_ARTIFACT_ROOT"):
        env.pop(key, None)
    bin_dir = Path(sys.executable).parent

    def root(name: str) -> list[str]:
        data = work / name
        link = Catalog.raw_root(data, cfg.dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(raw, target_is_directory=True)
        return ["--set", f"data_root={data}", *(x for s in args.set for x in ("--set", s))]

    seconds = {}
    print("direct run ...", flush=True)
    seconds["direct"] = _timed([sys.executable, "-m", "bench.direct", "--preset", args.preset, *root("direct")],
                               env, work / "direct.log")
    print(f"  {seconds['direct']:.1f} s\nprefect run ...", flush=True)
    seconds["prefect"] = _timed([str(bin_dir / "mm"), "pipeline", "--preset", args.preset, *root("prefect")],
                                env, work / "prefect.log")
    print(f"  {seconds['prefect']:.1f} s\ncached rerun ...", flush=True)
    seconds["rerun"] = _timed([str(bin_dir / "mm"), "pipeline", "--preset", args.preset, *root("prefect")],
                              env, work / "rerun.log")
    print(f"  {seconds['rerun']:.1f} s", flush=True)
    result = {"preset": args.preset, "overrides": args.set, "images": args.images, "cpus": os.cpu_count(),
              "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "prefect_over_direct": round(seconds["prefect"] / seconds["direct"], 3),
              "rerun_over_first": round(seconds["rerun"] / seconds["prefect"], 3), "logs": str(work)}
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
