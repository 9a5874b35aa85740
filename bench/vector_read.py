"""Reading feature vectors: the project's path against `np.load`, and read options and layouts that could close
the gap without changing the library.

From the repository root:

    .venv/bin/python -m bench.vector_read                 # 20,000 rows (870 MB), 1 file, best of 5: ~1.5 min
    .venv/bin/python -m bench.vector_read --shards 20     # the same rows in 20 files of 1,000 (the demo's shards)
    .venv/bin/python -m bench.vector_read --modes fresh --repeat 3   # each read in a new process: ~5 min
    .venv/bin/python -m bench.vector_read --rows 2000 --repeat 1      # a smoke test, ~15 s

Data: the matrices of BENCHMARKS.md "Feature shards" (bench/shard_io.py `feature_matrices`, seed 2): --rows x 256
float32 embeddings and --rows x (664 x 16) float32 grids (the demo encoder's multi-scale 4x4 grid, half zeros).
They are written once, before any timing, as:

- `.npy`, one file per matrix (the reference: `np.load` of the same matrix);
- feature shards as the project writes them (`mmcore.data.shards.write_table`: vector bytes, uncompressed, no
  dictionary or statistics), --shards files with a `sample_id` column too;
- the same tables written by plain `pq.write_table` with 64 MiB data pages (instead of 1 MiB);
- the same tables as Arrow IPC (Feather v2) files, uncompressed.

Two workloads: `emb+grid` (the image columns `load_features` reads) and `emb` (what `image_index` reads). Each
variant's time is read + touching every 4 KiB page of the result (one byte per page), so a variant that returns
views into a memory map pays for its page faults as `np.load`'s copy does; the result is checked against the
matrices once (outside the clock). Warm page cache (the files were just written, and each variant is read once
before timing); best of --repeat, variants interleaved (reversed every other repeat). The ratio is
np.load seconds / variant seconds (goal for the project's path: >= 0.5; it was 0.42 in BENCHMARKS.md).

Two modes. `warm` (default): every timing in this process, as BENCHMARKS.md measured; the allocators then hand
back memory an earlier read already touched (likely more so for pyarrow's mimalloc than for numpy's malloc,
which unmaps arrays > 32 MB on free). `fresh`: each timing is the first read of a new process (a stage process reads
its features once), after an untimed read of a one-row file of the same format and options (a process's first
Parquet read costs ~0.3 s once, whatever it reads). On this VM, first-touched anonymous memory is sometimes very
slow (~0.4 s for 130 MB), so single timings in either mode vary a lot: keep --repeat >= 3.
Results go to bench/results/vector_read.json (vector_read-shards20.json with --shards 20, vector_read-fresh.json
with --modes fresh; .smoke.json for runs below the default rows or with --repeat 1).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from bench.machine import header, log, wait_idle, write_results
from bench.shard_io import EMB_DIM, feature_matrices
from mmcore.data.shards import vectors, vectors_to_numpy, write_table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
COLUMNS = {"emb+grid": ["image_embedding", "image_grid"], "emb": ["image_embedding"]}
BIG_PAGE = 64 << 20  # bytes per Parquet data page in the "64 MiB pages" layout (pyarrow's default: 1 MiB)
PROJECT = "project: read_features + vectors_to_numpy (pq defaults)"
LOAD_FEATURES = "load_features's steps (+ split filter), pq defaults"
PROJECT_READERS = (PROJECT, LOAD_FEATURES)  # the variants that call mmcore.features.read_features
Reader = Callable[[list[str]], list[np.ndarray]]  # columns -> one (N, W) float32 matrix per column


# --- the files -----------------------------------------------------------------------------------------


def write_layouts(folder: Path, mats: dict[str, np.ndarray], shards: int) -> dict[str, list[Path]]:
    """Writes every layout of `mats` (column name -> (N, W) float32) under `folder`; layout -> its files."""
    rows = len(next(iter(mats.values())))
    cuts = np.linspace(0, rows, shards + 1).astype(int)
    files: dict[str, list[Path]] = {"npy": [], "project": [], "big_pages": [], "feather": []}
    for name, m in mats.items():
        np.save(folder / f"{name}.npy", m)
        files["npy"].append(folder / f"{name}.npy")
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        table = pa.table({"sample_id": [f"s{i}" for i in range(a, b)], "split": ["train"] * (b - a),
                          **{name: vectors(m[a:b]) for name, m in mats.items()}})
        files["project"].append(write_table(folder / f"vectors-{k:05d}.parquet", table, {"cells": 16}))
        big = folder / f"big-pages-{k:05d}.parquet"
        pq.write_table(table, big, compression="none", use_dictionary=["sample_id"],
                       write_statistics=["sample_id"], data_page_size=BIG_PAGE)
        files["big_pages"].append(big)
        feather.write_feather(table, folder / f"vectors-{k:05d}.arrow", compression="uncompressed")
        files["feather"].append(folder / f"vectors-{k:05d}.arrow")
    _write_warmup(folder / "warmup")
    return files


def _write_warmup(folder: Path) -> None:
    """A one-row file of each format, which a --child process reads before its clock starts."""
    folder.mkdir()
    table = pa.table({"split": ["train"], "image_embedding": vectors(np.zeros((1, 4), np.float32))})
    write_table(folder / "features.parquet", table)
    feather.write_feather(table, folder / "features.arrow", compression="uncompressed")
    np.save(folder / "image_embedding.npy", np.zeros((1, 4), np.float32))


def _read_warmup(folder: Path, name: str) -> None:
    """What the first read of a format costs a process once (~0.3 s for Parquet: setting up its reader and
    thread pools) is not the cost of reading vectors: a --child reads the one-row file of its variant first."""
    files = {"npy": [folder / "image_embedding.npy"], "project": [folder / "features.parquet"],
             "big_pages": [folder / "features.parquet"], "feather": [folder / "features.arrow"]}
    touch(readers(files)[name](["image_embedding"]))


# --- the readers ---------------------------------------------------------------------------------------


def _matrices(tables: list[pa.Table], columns: list[str]) -> list[np.ndarray]:
    """The project's conversion: concatenate the shards' tables, then `vectors_to_numpy` per column (a view for
    one chunk, a copy for several)."""
    table = pa.concat_tables(tables)
    return [vectors_to_numpy(table[c]) for c in columns]


def _into(tables: list[pa.Table], columns: list[str]) -> list[np.ndarray]:
    """Each shard's vectors copied straight into one preallocated (N, W) matrix per column (no concatenation)."""
    rows = sum(t.num_rows for t in tables)
    out = []
    for c in columns:
        m = np.empty((rows, tables[0].schema.field(c).type.byte_width // 4), np.float32)
        at = 0
        for t in tables:
            m[at : at + t.num_rows] = vectors_to_numpy(t[c])
            at += t.num_rows
        out.append(m)
    return out


def read_features(paths: list[Path], columns: list[str]) -> pa.Table:
    """`mmcore.features.read_features`, imported on first use: it imports torch (~2-5 s here), which a --child
    process timing another variant need not (a --child of a project variant imports it before its clock)."""
    from mmcore.features import read_features as project_read_features

    return project_read_features(paths, columns)


def read_ipc(path: Path, columns: list[str], mmap: bool, via_feather: bool) -> pa.Table:
    """The columns of an Arrow IPC file. Through `pa.ipc` on a memory map the buffers are views of the file
    (zero-copy). Otherwise the whole record batch is read, whichever columns are asked for: with `included_fields`
    too, and `feather.read_table(memory_map=True)` copies it all as well (pyarrow 25)."""
    if via_feather:
        return feather.read_table(path, columns=columns, memory_map=mmap)
    source = pa.memory_map(str(path)) if mmap else pa.OSFile(str(path))
    return pa.ipc.open_file(source).read_all().select(columns)


def _load_features_path(paths: list[Path], columns: list[str]) -> list[np.ndarray]:
    """What `load_features` does with the image columns: per shard `read_features` with the split column, keep
    the rows of the wanted splits (here all of them), concatenate, `vectors_to_numpy`."""
    wanted = pa.array(["train"])
    tables = []
    for p in paths:
        t = read_features([p], ["split", *columns])
        tables.append(t.filter(pc.is_in(t["split"], wanted)))
    return _matrices(tables, columns)


def readers(files: dict[str, list[Path]]) -> dict[str, Reader]:
    """The variants timed, by the name the table shows; "npy" is the reference."""
    proj, big, arrow = files["project"], files["big_pages"], files["feather"]

    def parquet(paths: list[Path], convert: Callable = _matrices, **kw: object) -> Reader:
        return lambda cols: convert([pq.read_table(p, columns=cols, **kw) for p in paths], cols)

    def ipc(mmap: bool, via_feather: bool = False) -> Reader:
        return lambda cols: _matrices([read_ipc(p, cols, mmap, via_feather) for p in arrow], cols)

    return {
        "npy": lambda cols: [np.load(files["npy"][0].parent / f"{c}.npy") for c in cols],
        "npy, mmap_mode='r' (lazy; reference)": lambda cols: [
            np.load(files["npy"][0].parent / f"{c}.npy", mmap_mode="r") for c in cols],
        PROJECT: lambda cols: [vectors_to_numpy(read_features(proj, cols)[c]) for c in cols],
        LOAD_FEATURES: lambda cols: _load_features_path(proj, cols),
        "project files, memory_map=True": parquet(proj, memory_map=True),
        "project files, memory_map=True, pre_buffer=False": parquet(proj, memory_map=True, pre_buffer=False),
        "project files, memory_map=True, into one matrix": parquet(proj, _into, memory_map=True),
        "project files, pre_buffer=False": parquet(proj, pre_buffer=False),
        "project files, pre_buffer=False, buffer_size=8 MiB": parquet(proj, pre_buffer=False, buffer_size=8 << 20),
        "project files, use_threads=False": parquet(proj, use_threads=False),
        "64 MiB pages (pq.write_table), defaults": parquet(big),
        "64 MiB pages (pq.write_table), memory_map=True": parquet(big, memory_map=True),
        "Arrow IPC file (Feather v2), uncompressed: pa.ipc read": ipc(False),
        "Arrow IPC file (Feather v2), uncompressed: pa.ipc on pa.memory_map (zero-copy views)": ipc(True),
        "Arrow IPC file (Feather v2), uncompressed: feather.read_table(memory_map=True)": ipc(True, True),
    }


# --- the timings ---------------------------------------------------------------------------------------


def touch(ms: list[np.ndarray]) -> int:
    """Reads one byte of every 4 KiB page of the matrices: a lazily mapped result pays its page faults here."""
    return sum(int(np.asarray(m).reshape(-1).view(np.uint8)[::4096].max(initial=0)) for m in ms)


def time_read(reader: Reader, cols: list[str]) -> float:
    t0 = time.perf_counter()
    ms = reader(cols)
    touch(ms)
    seconds = time.perf_counter() - t0
    del ms
    return seconds


def check(name: str, reader: Reader, cols: list[str], mats: dict[str, np.ndarray]) -> None:
    """Fails if a variant reads back other values than were written (also the untimed warm-up read)."""
    for c, m in zip(cols, reader(cols), strict=True):
        if m.shape != mats[c].shape or not np.array_equal(m, mats[c]):
            raise RuntimeError(f"{name}: column {c} reads back different values")


def time_fresh(name: str, cols: list[str], folder: Path) -> tuple[float, float]:
    """One read + touch in a new Python process (imports not timed): the first read of a stage process, with
    the allocator's and the kernel's memory as a process starts with it. Returns (seconds, the peak MB that
    pyarrow's memory pool held in that process)."""
    cmd = [sys.executable, "-m", "bench.vector_read", "--child", name, "--columns", ",".join(cols),
           "--work", str(folder)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    seconds, peak_mb = done.stdout.split()[-2:]
    return float(seconds), float(peak_mb)


def time_variants(rs: dict[str, Reader], cols: list[str], repeat: int, idle_wait: float,
                  fresh: Path | None = None) -> tuple[dict[str, list[float]], dict[str, float]]:
    """`repeat` timings of each variant, interleaved, in reverse order every other repeat; with `fresh` (the
    files' folder) each timing runs in a new process, else all in this one (after the check's warm-up read).
    Returns the seconds, and with `fresh` each variant's peak pyarrow pool MB."""
    names, times, peaks = list(rs), {name: [] for name in rs}, {}
    for r in range(repeat):
        wait_idle(idle_wait)
        for name in names if r % 2 == 0 else names[::-1]:
            if fresh:
                seconds, peaks[name] = time_fresh(name, cols, fresh)
            else:
                seconds = time_read(rs[name], cols)
            times[name].append(seconds)
    return times, peaks


def summarise(times: dict[str, list[float]], peaks: dict[str, float], mb: float) -> dict[str, dict]:
    """Per variant: best and median seconds, MB/s, the ratio np.load best / variant best (and the peak MB of
    pyarrow's pool in a fresh process, where measured: numpy's own allocations are not in it)."""
    ref = min(times["npy"])
    return {name: {"best_seconds": round(min(t), 4), "median_seconds": round(float(np.median(t)), 4),
                   "all_seconds": [round(x, 4) for x in t], "read_mb_s": round(mb / min(t), 1),
                   "vs_npy": round(ref / min(t), 3), "meets_0_5": ref / min(t) >= 0.5,
                   **({"arrow_pool_peak_mb": round(peaks[name], 1)} if name in peaks else {})}
            for name, t in times.items()}


def layout_files(folder: Path) -> dict[str, list[Path]]:
    """The files `write_layouts` wrote in `folder`, by layout (what a --child process reads)."""
    return {"npy": sorted(folder.glob("*.npy")), "project": sorted(folder.glob("vectors-*.parquet")),
            "big_pages": sorted(folder.glob("big-pages-*.parquet")), "feather": sorted(folder.glob("*.arrow"))}


def bench(args: argparse.Namespace, folder: Path) -> dict:
    """Writes the layouts, checks every variant once, times them per workload and mode, summarises."""
    emb, grid = feature_matrices(args.rows, args.grid_dim)
    mats = {"image_embedding": emb, "image_grid": grid}
    log(f"writing {args.rows} x {EMB_DIM} + {args.rows} x {args.grid_dim} float32 "
        f"({(emb.nbytes + grid.nbytes) / 1e6:.0f} MB) in every layout, {args.shards} file(s) each (not timed)")
    files = write_layouts(folder, mats, args.shards)
    sizes = {layout: round(sum(p.stat().st_size for p in ps) / 1e6, 1) for layout, ps in files.items()}
    rs = readers(files)
    out = {}
    for workload, cols in COLUMNS.items():
        for name, reader in rs.items():
            check(name, reader, cols, mats)
        mb = sum(mats[c].nbytes for c in cols) / 1e6
        for mode in args.modes:
            log(f"{workload}, {mode} process: {mb:.0f} MB of float32, best of {args.repeat}")
            times, peaks = time_variants(rs, cols, args.repeat, args.idle_wait, folder if mode == "fresh" else None)
            res = summarise(times, peaks, mb)
            for name, r in res.items():
                log(f"  {name:68s} {r['best_seconds']:7.4f} s {r['read_mb_s']:6.0f} MB/s {r['vs_npy']:5.2f}x np.load")
            out[f"{workload}, {mode} process"] = {"mb": round(mb, 1), "variants": res}
    return {"rows": args.rows, "embedding_dim": EMB_DIM, "grid_dim": args.grid_dim, "shards": args.shards,
            "repeat": args.repeat, "file_mb": sizes, "workloads": out,
            "note": "seconds = read + touch one byte per 4 KiB page of the result; warm page cache; warm process: "
                    "every timing in this process after a warm-up read; fresh process: each timing the first read "
                    "of a new process; vs_npy = np.load best seconds / variant best seconds"}


def table(res: dict) -> str:
    """The markdown table: one row per variant, one column per workload and mode, "seconds (x np.load)"."""
    ws = list(res["workloads"])
    lines = [f"{res['rows']:,} rows in {res['shards']} file(s), best of {res['repeat']}, warm page cache; "
             "seconds (np.load seconds / variant seconds):\n",
             "| variant | " + " | ".join(ws) + " |", "|---|" + "---|" * len(ws)]
    for name in res["workloads"][ws[0]]["variants"]:
        cells = [res["workloads"][w]["variants"][name] for w in ws]
        lines.append(f"| {name} | " + " | ".join(f"{c['best_seconds']:.3f} ({c['vs_npy']:.2f}x)" for c in cells) + " |")
    return "\n".join(lines)


def child(args: argparse.Namespace) -> None:
    """--child: one timed read of one variant in this (new) process; prints its seconds and pyarrow's peak MB."""
    reader = readers(layout_files(args.work))[args.child]
    if args.child in PROJECT_READERS:
        import mmcore.features  # noqa: F401  (imports torch: not part of the read)
    _read_warmup(args.work / "warmup", args.child)
    seconds = time_read(reader, args.columns.split(","))
    print(f"{seconds:.6f} {pa.default_memory_pool().max_memory() / 1e6:.1f}")


def result_name(args: argparse.Namespace, smoke: bool) -> str:
    """vector_read[-shards20][-fresh][.smoke].json: one file per kind of run, so none overwrites another."""
    shards = f"-shards{args.shards}" if args.shards > 1 else ""
    modes = "" if args.modes == ["warm"] else "-" + "+".join(args.modes)
    return f"vector_read{shards}{modes}{'.smoke' if smoke else ''}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000, help="rows of each matrix")
    parser.add_argument("--grid-dim", type=int, default=664 * 16, help="grid values per row (demo: 664 x 16)")
    parser.add_argument("--shards", type=int, default=1, help="files the rows are split into (demo shards: 1,000 rows)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per variant; the best is kept")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for a quiet machine before each repeat")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-vector-read")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/vector_read[-shardsN][-fresh][.smoke].json")
    parser.add_argument("--modes", nargs="+", choices=["warm", "fresh"], default=["warm"],
                        help="time in this process (warm) and/or each read in a new process (fresh)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a variant's name: time one read, print seconds
    parser.add_argument("--columns", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    smoke = args.rows < 20000 or args.repeat < 2
    out = args.out or RESULTS / result_name(args, smoke)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    start = time.perf_counter()
    res = header("bench.vector_read", {})
    if smoke:
        res["smoke"] = "validation run below the defaults: not a measurement"
    try:
        res["vector_read"] = bench(args, args.work)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    write_results(res, start, out)
    print()
    print(table(res["vector_read"]))
    log(f"done in {res['total_seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
