"""Data-layer benchmark (issue 3): ingest throughput, ingest peak memory, feature-shard read/write speed.

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
   records, each ingest in a fresh subprocess (peak RSS = the child's own VmHWM, see _peak_rss_mb).
c. Writing and reading a feature matrix (`--feature-rows` x 256 embedding + rows x G*cells grid, G=664
   and cells=16 as the demo preset's multi-scale mobilenet_v3_small) as the feature shards store it (one
   fixed-size float32 byte string per row: `shards.vectors` + `write_table`, read with
   `vectors_to_numpy`), vs np.save/np.load, and the FixedSizeList<float32> layout the shards had before
   (zstd and uncompressed).

The machine may be shared: before every timed run the benchmark waits (up to `--idle-wait` s) for the
other processes' CPU use to drop below 0.15 cores, and it records their load during each run, so a number
measured under contention is visible as such in the JSON ("others_cores").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.shards import vectors, vectors_to_numpy, write_table
from mmcore.data.sources import open_source

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "ingest.json"
PHOTO_W, PHOTO_H = 640, 480
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- datasets ---------------------------------------------------------------------------------------


def _photo(rng: np.random.Generator) -> Image.Image:
    """A 640x480 photo-like image: smooth colour blobs, a gradient, mid-frequency texture and grain."""
    h, w = PHOTO_H, PHOTO_W
    coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(4, 12)), 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    mid = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    arr += (np.asarray(Image.fromarray(mid).resize((w, h), Image.Resampling.BILINEAR), np.float32) - 128) * 0.25
    arr += np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-50, 50, 3).astype(np.float32)
    arr += np.linspace(-1, 1, h, dtype=np.float32)[:, None, None] * rng.uniform(-50, 50, 3).astype(np.float32)
    arr += rng.standard_normal((h, w, 3), dtype=np.float32) * 5.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _annotation(i: int, image: str) -> str:
    return json.dumps({"id": f"{i:06d}", "image": image, "captions": {"en": [f"synthetic picture number {i}"]}})


def photo_dataset(work: Path, n: int) -> Path:
    """`n` distinct photo-like JPEGs in the canonical layout, generated once (seed 0) and cached."""
    root = work / f"photos-{n}-{PHOTO_W}x{PHOTO_H}-v1"
    done = work / f"{root.name}.complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    lines = []
    for i in range(n):
        rel = f"images/{i:06d}.jpg"
        _photo(rng).save(root / rel, format="JPEG", quality=90)
        lines.append(_annotation(i, rel))
        if (i + 1) % 500 == 0:
            log(f"  generated {i + 1}/{n} JPEGs")
    (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    log(f"  {n} JPEGs generated in {time.perf_counter() - t0:.0f} s")
    done.touch()
    return root


def tiny_dataset(work: Path, sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    """max(sizes) distinct 16x16 PNGs under one root, and one annotation file per size (its first n lines)."""
    n = max(sizes)
    root = work / f"tiny-{n}-v1"
    done = work / f"{root.name}.complete"
    files = {s: root / f"ann-{s}.jsonl" for s in sizes}
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        lines = []
        for i in range(n):
            rel = f"images/{i // 1000:04d}/{i:07d}.png"
            if i % 1000 == 0:
                (root / rel).parent.mkdir(parents=True)
            px = rng.integers(0, 256, 16 * 16 * 3, dtype=np.uint8)
            px[:4] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)  # every image differs: dedupe keeps all
            buf = io.BytesIO()
            Image.frombytes("RGB", (16, 16), px.tobytes()).save(buf, format="PNG")
            (root / rel).write_bytes(buf.getvalue())
            lines.append(_annotation(i, rel))
            if (i + 1) % 20000 == 0:
                log(f"  generated {i + 1}/{n} tiny PNGs")
        (root / "annotations.jsonl").write_text("\n".join(lines) + "\n")
        (root / "lines.json").write_text(json.dumps(n))
        log(f"  {n} tiny PNGs generated in {time.perf_counter() - t0:.0f} s")
        done.touch()
    lines = None
    for s, path in files.items():
        if not path.exists():
            if lines is None:
                lines = (root / "annotations.jsonl").read_text().splitlines()
            path.write_text("\n".join(lines[:s]) + "\n")
    return root, files


# --- CPU time of this process and of its descendants (the forkserver pool) --------------------------


def _stat(pid: int) -> tuple[int, list[int]] | None:
    """(CPU ticks, child pids) of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        children = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                children += [int(c) for c in fh.read().split()]
        return int(fields[11]) + int(fields[12]), children
    except (OSError, IndexError, ValueError):
        return None


class DescendantCPU:
    """Samples the CPU time of every descendant process every `interval` s (a worker's last < interval s
    before it exits is missed, so this is a lower bound)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.ticks, self._stop = interval, {}, threading.Event()
        self.start: dict[int, int] = {}  # processes alive before (the forkserver of an earlier run)

    def _sample(self) -> None:
        todo = list((_stat(os.getpid()) or (0, []))[1])
        while todo:
            pid = todo.pop()
            st = _stat(pid)
            if st is not None:
                self.ticks[pid] = max(self.ticks.get(pid, 0), st[0])
                todo += st[1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> DescendantCPU:
        self._sample()
        self.start, self.ticks = self.ticks, {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(t - self.start.get(pid, 0) for pid, t in self.ticks.items()) / TICKS


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICKS  # minus idle and iowait


def _own_tree_cpu() -> float:
    total, todo = _own_cpu(), list((_stat(os.getpid()) or (0, []))[1])
    while todo:
        st = _stat(todo.pop())
        if st is not None:
            total += st[0] / TICKS
            todo += st[1]
    return total


def wait_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Waits until other processes use < `threshold` cores over a 1 s window (at most `max_wait` s);
    returns their load in cores over the last window."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, o0 = _machine_busy(), _own_tree_cpu()
        time.sleep(1.0)
        others = max(0.0, (_machine_busy() - b0) - (_own_tree_cpu() - o0))
        if others < threshold or time.monotonic() >= deadline:
            return others


# --- a. ingest throughput -----------------------------------------------------------------------------


def naive_loop(root: Path, out: Path) -> int:
    """The baseline: one process, full-size decode (no draft), convert, resize, PNG-encode, one file each."""
    out.mkdir(parents=True)
    n = 0
    with open(root / "annotations.jsonl", encoding="utf-8") as fh:
        for line in fh:
            ann = json.loads(line)
            with Image.open(root / ann["image"]) as img:
                small = img.convert("RGB").resize((64, 64))
            buf = io.BytesIO()
            small.save(buf, format="PNG")
            (out / f"{n:06d}.png").write_bytes(buf.getvalue())
            n += 1
    return n


def bench_throughput(work: Path, n: int, repeat: int, idle_wait: float) -> dict:
    log(f"a. ingest throughput on {n} photo-like {PHOTO_W}x{PHOTO_H} JPEGs")
    root = photo_dataset(work, n)
    jpeg_mb = sum(p.stat().st_size for p in (root / "images").iterdir()) / 1e6
    cfg = IngestConfig()  # image_size 64, shard_size 1000: the demo's settings
    runs: dict[str, list[dict]] = {"naive": [], "ingest_w1": [], "ingest_w2": []}
    for r in range(repeat):
        for name in runs:
            out = work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            before = wait_idle(idle_wait)
            cpu0, busy0 = _own_cpu(), _machine_busy()
            with DescendantCPU() as pool_cpu:
                t0 = time.perf_counter()
                if name == "naive":
                    done = naive_loop(root, out)
                else:
                    report = ingest(open_source(root), ProcessedDir(out), cfg, workers=int(name[-1]))
                    if report.accepted != n:
                        raise RuntimeError(f"{name}: {report.accepted} of {n} accepted ({report.rejected} rejected)")
                    done = report.accepted
                secs = time.perf_counter() - t0
            main_cpu, busy = _own_cpu() - cpu0, _machine_busy() - busy0
            others = max(0.0, busy - main_cpu - pool_cpu.seconds) / secs  # upper bound: pool CPU is a lower one
            runs[name].append({"seconds": secs, "records": done, "main_cpu_s": main_cpu, "pool_cpu_s": pool_cpu.seconds,
                               "others_cores": others, "others_cores_before": before})
            log(f"  run {r + 1}/{repeat} {name:10s} {secs:6.2f} s  {done / secs:7.1f} records/s  "
                f"(main process CPU {main_cpu:.1f} s, pool CPU >= {pool_cpu.seconds:.1f} s; "
                f"other processes {before:.2f} cores before, <= {others:.2f} during)")
            shutil.rmtree(out, ignore_errors=True)
    best = {name: min(rs, key=lambda x: x["seconds"]) for name, rs in runs.items()}
    base = n / best["naive"]["seconds"]
    rows = {}
    for name, b in best.items():
        rate = n / b["seconds"]
        rows[name] = {"best_seconds": round(b["seconds"], 3), "records_per_s": round(rate, 1),
                      "vs_naive": round(rate / base, 3), "main_cpu_s": round(b["main_cpu_s"], 2),
                      "pool_cpu_s": round(b["pool_cpu_s"], 2), "others_cores": round(b["others_cores"], 2),
                      "all_seconds": [round(x["seconds"], 3) for x in runs[name]],
                      "all_others_cores": [round(x["others_cores"], 2) for x in runs[name]]}
    return {"images": n, "image_size": f"{PHOTO_W}x{PHOTO_H} JPEG q90", "jpeg_mb": round(jpeg_mb, 1),
            "output_size": 64, "repeat": repeat, "runs": rows,
            "goal": "ingest workers=2 >= 1.8x naive", "goal_met": rows["ingest_w2"]["vs_naive"] >= 1.8}


# --- b. ingest peak memory ----------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: Linux carries the parent's high-water mark into
    a vfork+exec'd child's ru_maxrss (RUSAGE_SELF and wait4 alike), so a child started by a 500 MB parent
    reports >= 500 MB however little it uses; VmHWM belongs to the child's own address space."""
    with open("/proc/self/status") as fh:
        kb = next(line for line in fh if line.startswith("VmHWM:")).split()[1]
    return int(kb) / 1024


def memory_child(annotations: str, out: str, trace: bool) -> None:
    """Runs in a fresh process: ingest with workers=1, prints one JSON line of what it measured."""
    import tracemalloc

    rss_start = _rss_mb()
    samples: list[tuple[int, float]] = []
    if trace:
        tracemalloc.start(3)
    snap0 = tracemalloc.take_snapshot() if trace else None
    t0 = time.perf_counter()
    report = ingest(open_source(annotations, "jsonl"), ProcessedDir(Path(out)), IngestConfig(image_size=16, min_side=8),
                    workers=1, progress=lambda shard, rep: samples.append((rep.processed, round(_rss_mb(), 1))))
    secs = time.perf_counter() - t0
    result = {"seconds": secs, "accepted": report.accepted, "rejected": report.rejected, "shards": len(report.shards),
              "rss_after_imports_mb": round(rss_start, 1),
              "peak_rss_mb": round(_peak_rss_mb(), 1),
              "rss_by_records": samples}
    if trace:
        result["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        stats = tracemalloc.take_snapshot().compare_to(snap0, "lineno")
        result["top_growth"] = [f"{s.size_diff / 2**20:7.1f} MiB {s.count_diff:+8d} blocks  {s.traceback}"
                                for s in stats[:12]]
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(annotations: Path, out: Path, trace: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.ingest_bench", "--child", str(annotations), str(out)]
    if trace:
        cmd.append("--trace")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    proc.wait()
    wall = time.perf_counter() - t0
    proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {stdout[-2000:]}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    result["process_wall_s"] = round(wall, 2)
    result["ingest_s"] = round(result.pop("seconds"), 2)
    shutil.rmtree(out, ignore_errors=True)
    return result


def bench_memory(work: Path, sizes: list[int], trace: bool) -> dict:
    log(f"b. ingest peak RSS at {', '.join(map(str, sizes))} records (tiny distinct 16x16 PNGs, workers=1)")
    _, files = tiny_dataset(work, sizes)
    rows = {}
    for s in sizes:
        log(f"  ingesting {s} records in a fresh subprocess ...")
        r = _run_child(files[s], work / f"out-mem-{s}")
        if r["accepted"] != s:
            raise RuntimeError(f"{s} records: {r['accepted']} accepted, {r['rejected']} rejected")
        r["rss_by_records"] = r["rss_by_records"][:: max(1, len(r["rss_by_records"]) // 10)] + r["rss_by_records"][-1:]
        rows[str(s)] = r
        log(f"  {s:7d} records: peak RSS {r['peak_rss_mb']:.0f} MiB (after imports {r['rss_after_imports_mb']:.0f}), "
            f"ingest {r['ingest_s']:.1f} s ({s / r['ingest_s']:.0f} records/s), process {r['process_wall_s']:.1f} s")
    lo, hi = str(min(sizes)), str(max(sizes))
    ratio = rows[hi]["peak_rss_mb"] / rows[lo]["peak_rss_mb"]
    growth = (rows[hi]["peak_rss_mb"] - rows[lo]["peak_rss_mb"]) * 2**20 / (int(hi) - int(lo))
    out = {"sizes": sizes, "image": "16x16 PNG", "config": "IngestConfig(image_size=16, min_side=8), workers=1",
           "runs": rows, "ratio": round(ratio, 3), "bytes_per_extra_record": round(growth, 1),
           "goal": f"peak RSS {hi}/{lo} <= 1.3", "goal_met": ratio <= 1.3}
    if trace:
        log(f"  tracemalloc run at {hi} records (slower) ...")
        t = _run_child(files[int(hi)], work / "out-mem-trace", trace=True)
        out["tracemalloc"] = {"records": int(hi), "traced_peak_mb": t["traced_peak_mb"], "top_growth": t["top_growth"]}
        for line in t["top_growth"]:
            log("   " + line)
    return out


# --- c. feature shard I/O -----------------------------------------------------------------------------


def _fsl(matrix: np.ndarray) -> pa.Array:  # the layout feature shards had before
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def bench_shards(work: Path, rows: int, grid_channels: int, cells: int, repeat: int, idle_wait: float) -> dict:
    emb_dim, grid_dim = 256, grid_channels * cells
    log(f"c. feature shard I/O: {rows} x {emb_dim} embedding + {rows} x {grid_dim} grid (float32)")
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((rows, emb_dim), dtype=np.float32)
    grid = np.maximum(rng.standard_normal((rows, grid_dim), dtype=np.float32), 0)  # post-activation: ~half zeros
    mb = (emb.nbytes + grid.nbytes) / 1e6
    folder = work / "shards"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fsl_schema = pa.schema([("image_embedding", pa.list_(pa.float32(), emb_dim)),
                            ("image_grid", pa.list_(pa.float32(), grid_dim))])

    def w_npy() -> None:
        np.save(folder / "emb.npy", emb)
        np.save(folder / "grid.npy", grid)

    def r_npy() -> tuple[np.ndarray, np.ndarray]:
        return np.load(folder / "emb.npy"), np.load(folder / "grid.npy")

    def w_fsl(compression: str) -> None:
        table = pa.table({"image_embedding": _fsl(emb), "image_grid": _fsl(grid)}, schema=fsl_schema)
        pq.write_table(table, folder / f"fsl-{compression}.parquet", compression=compression)

    def r_fsl(compression: str) -> tuple[np.ndarray, np.ndarray]:
        t = pq.read_table(folder / f"fsl-{compression}.parquet")
        return vectors_to_numpy(t["image_embedding"]), vectors_to_numpy(t["image_grid"])

    def w_vectors() -> None:  # the project's feature shards: mmcore.data.shards.vectors + write_table
        table = pa.table({"image_embedding": vectors(emb), "image_grid": vectors(grid)})
        write_table(folder / "vectors.parquet", table, {"cells": cells})

    def r_vectors() -> tuple[np.ndarray, np.ndarray]:
        t = pq.read_table(folder / "vectors.parquet")
        return vectors_to_numpy(t["image_embedding"]), vectors_to_numpy(t["image_grid"])

    methods = {
        "np.save / np.load (.npy)": (w_npy, r_npy, ["emb.npy", "grid.npy"]),
        "Parquet vector bytes per row, uncompressed (the project's write_table)": (w_vectors, r_vectors,
                                                                           ["vectors.parquet"]),
        "Parquet FixedSizeList, zstd (the layout before)": (lambda: w_fsl("zstd"), lambda: r_fsl("zstd"),
                                                            ["fsl-zstd.parquet"]),
        "Parquet FixedSizeList, uncompressed": (lambda: w_fsl("none"), lambda: r_fsl("none"), ["fsl-none.parquet"]),
    }
    results = {}
    for name, (write, read, files) in methods.items():
        wt, rt = [], []
        before = wait_idle(idle_wait)
        for _ in range(repeat):
            t0 = time.perf_counter()
            write()
            wt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            e, g = read()
            rt.append(time.perf_counter() - t0)
            if not (np.array_equal(e, emb) and np.array_equal(g, grid)):
                raise RuntimeError(f"{name}: read back differs from what was written")
            del e, g
        size = sum((folder / f).stat().st_size for f in files) / 1e6
        results[name] = {"write_s": round(min(wt), 3), "read_s": round(min(rt), 3), "file_mb": round(size, 1),
                         "write_mb_s": round(mb / min(wt), 1), "read_mb_s": round(mb / min(rt), 1),
                         "others_cores_before": round(before, 2)}
        log(f"  {name:46s} write {min(wt):6.2f} s ({mb / min(wt):6.0f} MB/s)  read {min(rt):6.2f} s "
            f"({mb / min(rt):6.0f} MB/s)  file {size:.0f} MB")
    npy = results["np.save / np.load (.npy)"]
    for r in results.values():
        r["write_vs_npy"] = round(r["write_mb_s"] / npy["write_mb_s"], 3)
        r["read_vs_npy"] = round(r["read_mb_s"] / npy["read_mb_s"], 3)
    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "embedding_dim": emb_dim, "grid": f"{grid_channels} x {cells}", "array_mb": round(mb, 1),
            "repeat": repeat, "note": "page cache warm (files just written); MB = raw float32 bytes",
            "methods": results}


# --- report ------------------------------------------------------------------------------------------


def tables(res: dict) -> str:
    out = []
    if "throughput" in res:
        t = res["throughput"]
        out.append(f"Ingest throughput, {t['images']} {t['image_size']} -> 64x64 PNG, best of {t['repeat']}:\n")
        out.append("| pipeline | seconds | records/s | vs naive | main-process CPU s | pool CPU s | others' load |")
        out.append("|---|---|---|---|---|---|---|")
        labels = {"naive": "naive loop (1 process, no draft)", "ingest_w1": "`ingest(workers=1)`",
                  "ingest_w2": "`ingest(workers=2)`"}
        for k, r in t["runs"].items():
            pool = f"{r['pool_cpu_s']:.1f}" if k == "ingest_w2" else "-"
            out.append(f"| {labels[k]} | {r['best_seconds']:.2f} | {r['records_per_s']:.0f} | {r['vs_naive']:.2f}x | "
                       f"{r['main_cpu_s']:.1f} | {pool} | {r['others_cores']:.2f} |")
        out.append("")
    if "memory" in res:
        m = res["memory"]
        out.append(f"Ingest peak RSS, {m['image']} records, {m['config']}, one fresh process per size:\n")
        out.append("| records | peak RSS MiB | RSS after imports MiB | ingest s | records/s | process wall s |")
        out.append("|---|---|---|---|---|---|")
        for s, r in m["runs"].items():
            out.append(f"| {int(s):,} | {r['peak_rss_mb']:.0f} | {r['rss_after_imports_mb']:.0f} | "
                       f"{r['ingest_s']:.1f} | {int(s) / r['ingest_s']:.0f} | {r['process_wall_s']:.1f} |")
        out.append(f"\nPeak RSS ratio {max(m['sizes'])}/{min(m['sizes'])}: **{m['ratio']:.2f}** "
                   f"({m['bytes_per_extra_record']:.0f} bytes per extra record)\n")
    if "shards" in res:
        s = res["shards"]
        out.append(f"Feature matrices, {s['rows']:,} x {s['embedding_dim']} + {s['rows']:,} x ({s['grid']}) float32 "
                   f"= {s['array_mb']:.0f} MB, best of {s['repeat']}, warm page cache:\n")
        out.append("| layout | write MB/s | read MB/s | write vs npy | read vs npy | file MB |")
        out.append("|---|---|---|---|---|---|")
        for name, r in s["methods"].items():
            out.append(f"| {name} | {r['write_mb_s']:.0f} | {r['read_mb_s']:.0f} | {r['write_vs_npy']:.2f} | "
                       f"{r['read_vs_npy']:.2f} | {r['file_mb']:.0f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
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
    args = parser.parse_args()
    if args.child:
        memory_child(*args.child, trace=args.trace)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    start = time.perf_counter()
    res: dict = {"machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                             "python": platform.python_version(), "pillow": Image.__version__,
                             "pyarrow": pa.__version__, "numpy": np.__version__},
                 "date": time.strftime("%Y-%m-%d"), "command": "python -m bench.ingest_bench " + " ".join(sys.argv[1:])}
    if "throughput" in only:
        res["throughput"] = bench_throughput(args.work, args.images, args.repeat, args.idle_wait)
    if "memory" in only:
        sizes = sorted(int(s) for s in args.memory_sizes.split(","))
        res["memory"] = bench_memory(args.work, sizes, args.trace)
    if "shards" in only:
        res["shards"] = bench_shards(args.work, args.feature_rows, args.grid_channels, args.cells, args.repeat,
                                     args.idle_wait)
    res["total_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(tables(res))
    for key in ("throughput", "memory"):
        if key in res:
            print(f"goal {res[key]['goal']}: {'met' if res[key]['goal_met'] else 'NOT met'}")
    log(f"done in {res['total_seconds']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
