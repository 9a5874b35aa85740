"""(b) of the ingest benchmark (bench/ingest_bench.py): peak RSS of `ingest(..., workers=1)`, each size in a
fresh subprocess (`python -m bench.ingest_bench --child ANNOTATIONS OUT`, which runs `memory_child`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.ingest_datasets import tiny_dataset
from bench.machine import log, peak_rss_mb
from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.sources import open_source

REPO = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    """This process's current RSS."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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
              "peak_rss_mb": round(peak_rss_mb(), 1),
              "rss_by_records": samples}
    if trace:
        result["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        stats = tracemalloc.take_snapshot().compare_to(snap0, "lineno")
        result["top_growth"] = [f"{s.size_diff / 2**20:7.1f} MiB {s.count_diff:+8d} blocks  {s.traceback}"
                                for s in stats[:12]]
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(annotations: Path, out: Path, trace: bool = False) -> dict:
    """`memory_child` in a fresh process over `annotations` into `out` (removed before and after); its result."""
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
    """Peak RSS at each of `sizes` records, their ratio, and with `trace` a tracemalloc run of the largest."""
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


def memory_table(m: dict) -> list[str]:
    """The markdown table of (b) and the peak-RSS ratio."""
    out = [f"Ingest peak RSS, {m['image']} records, {m['config']}, one fresh process per size:\n",
           "| records | peak RSS MiB | RSS after imports MiB | ingest s | records/s | process wall s |",
           "|---|---|---|---|---|---|"]
    for s, r in m["runs"].items():
        out.append(f"| {int(s):,} | {r['peak_rss_mb']:.0f} | {r['rss_after_imports_mb']:.0f} | "
                   f"{r['ingest_s']:.1f} | {int(s) / r['ingest_s']:.0f} | {r['process_wall_s']:.1f} |")
    out.append(f"\nPeak RSS ratio {max(m['sizes'])}/{min(m['sizes'])}: **{m['ratio']:.2f}** "
               f"({m['bytes_per_extra_record']:.0f} bytes per extra record)\n")
    return out
