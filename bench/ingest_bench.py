"""Data-layer benchmark: ingest throughput, ingest peak memory, feature-shard read/write speed.

From the repository root:

    .venv/bin/python -m bench.ingest_bench    # defaults: ~4.5 min on a 2-core CPU, ~2.5 min more the first time
    .venv/bin/python -m bench.ingest_bench --images 200 --memory-sizes 500,2000 --feature-rows 1000  # < 1 min

The first run generates and caches the images (2,000 JPEGs ~100 s, 100,000 tiny PNGs ~35 s) under --work.

Three measurements in one run; prints markdown tables and writes bench/results/ingest.json:

a. Ingest throughput on the same `--images` photo-like 640x480 JPEGs (canonical layout, generated once
   with a fixed seed and cached under `--work`; generation is not timed): a naive single-process loop
   (Pillow open, convert("RGB"), resize to 64x64, PNG-encode, write a file; no draft mode) vs
   `ingest(..., workers=1)` vs `ingest(..., workers=2)` (`mmcore.data.ingest.ingest` into a `ProcessedDir`: the
   ingest stage's decode-and-shard steps, without its tokenizer, token shards and manifest). Best of `--repeat`
   runs each, runs interleaved, every run into a fresh output folder. Also the CPU seconds of the main process
   and of its pool.
b. Peak RSS of `ingest(..., workers=1)` on tiny distinct 16x16 PNGs at each of `--memory-sizes`
   records, each ingest in a fresh subprocess (peak RSS = the child's own VmHWM, see bench/ingest_memory.py).
c. Writing and reading a feature matrix (`--feature-rows` x 256 embedding + rows x G*cells grid, G=664
   and cells=16 as the demo preset's multi-scale mobilenet_v3_small) as the feature shards store it (one
   fixed-size float32 byte string per row: `shards.vectors` + `write_table`, read with
   `vectors_to_numpy`), vs np.save/np.load, and the FixedSizeList<float32> layout the shards had before
   (zstd and uncompressed).

The machine may be shared: before every timed run the benchmark waits (up to `--idle-wait` s) for the
other processes' CPU use to drop below 0.15 cores, and it records their load during each run, so a number
measured under contention is visible as such in the JSON ("others_cores").

Layout: the datasets in bench/ingest_datasets.py; (a), (b), (c) and their tables in bench/ingest_throughput.py,
bench/ingest_memory.py and bench/shard_io.py; the machine-load helpers in bench/machine.py; this file only
parses options, runs the measurements asked for, and writes and prints the results.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.ingest_memory import bench_memory, memory_child, memory_table
from bench.ingest_throughput import bench_throughput, throughput_table
from bench.machine import header, log, write_results
from bench.shard_io import bench_shards, shards_table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "ingest.json"


def tables(res: dict) -> str:
    """The markdown tables of the measurements in `res`."""
    out = []
    if "throughput" in res:
        out += throughput_table(res["throughput"])
    if "memory" in res:
        out += memory_table(res["memory"])
    if "shards" in res:
        out += shards_table(res["shards"])
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="photo-like JPEGs for the throughput benchmark")
    parser.add_argument("--memory-sizes", default="10000,100000", help="record counts for the peak-RSS benchmark")
    parser.add_argument("--feature-rows", type=int, default=20000)
    parser.add_argument("--grid-channels", type=int, default=664, help="G (demo preset: 664)")
    parser.add_argument("--cells", type=int, default=16, help="grid cells (demo preset: 4x4)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per measurement; the best is kept")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for a quiet machine before each throughput timing")
    parser.add_argument("--only", default="throughput,memory,shards", help="comma-separated subset")
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run of the largest memory size")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-ingest-bench",
                        help="where generated datasets are cached and outputs go")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, metavar=("ANNOTATIONS", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def run(args: argparse.Namespace) -> dict:
    """The measurements named in --only, in the order a, b, c, after the machine and command."""
    only = set(args.only.split(","))
    res = header("bench.ingest_bench", {"pillow": Image.__version__})
    if "throughput" in only:
        res["throughput"] = bench_throughput(args.work, args.images, args.repeat, args.idle_wait)
    if "memory" in only:
        sizes = sorted(int(s) for s in args.memory_sizes.split(","))
        res["memory"] = bench_memory(args.work, sizes, args.trace)
    if "shards" in only:
        res["shards"] = bench_shards(args.work, args.feature_rows, args.grid_channels, args.cells, args.repeat,
                                     args.idle_wait)
    return res


def main() -> None:
    args = parse_args()
    if args.child:  # one memory measurement, in the fresh process bench_memory started
        memory_child(*args.child, trace=args.trace)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = run(args)
    write_results(res, start, args.out)
    print()
    print(tables(res))
    for key in ("throughput", "memory"):
        if key in res:
            print(f"goal {res[key]['goal']}: {'met' if res[key]['goal_met'] else 'NOT met'}")
    log(f"done in {res['total_seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
