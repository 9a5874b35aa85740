"""(a) of the ingest benchmark (bench/ingest_bench.py): ingest throughput against a naive single-process loop."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from PIL import Image

from bench.ingest_datasets import PHOTO_H, PHOTO_W, photo_dataset
from bench.machine import best_of, log, spread, timed
from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.sources import open_source

PIPELINES = ("naive", "ingest_w1", "ingest_w2")  # timed in this order in every repeat


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


def _run_pipeline(name: str, root: Path, out: Path, n: int, cfg: IngestConfig) -> int:
    """One pass of pipeline `name` over the `n` photos under `root` into `out`; returns the records written."""
    if name == "naive":
        return naive_loop(root, out)
    report = ingest(open_source(root), ProcessedDir(out), cfg, workers=int(name[-1]))
    if report.accepted != n:
        raise RuntimeError(f"{name}: {report.accepted} of {n} accepted ({report.rejected} rejected)")
    return report.accepted


def _timed_run(name: str, root: Path, work: Path, n: int, idle_wait: float, label: str) -> dict:
    """One timing of pipeline `name` into a fresh output folder, which is removed afterwards."""
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = IngestConfig()  # image_size 64, shard_size 1000: the demo's settings
    with timed(idle_wait, pool=True) as t:
        done = _run_pipeline(name, root, out, n, cfg)
    log(f"  {label} {name:10s} {t.seconds:6.2f} s  {done / t.seconds:7.1f} records/s  "
        f"(main process CPU {t.cpu_s:.1f} s, pool CPU >= {t.pool_cpu_s:.1f} s; "
        f"other processes {t.before:.2f} cores before, <= {t.others:.2f} during)")
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": t.seconds, "records": done, "main_cpu_s": t.cpu_s, "pool_cpu_s": t.pool_cpu_s,
            "others_cores": t.others, "others_cores_before": t.before}


def _summary(runs: dict[str, list[dict]], n: int) -> dict:
    """Per pipeline: its best run, its rate against the naive loop's, and every repeat."""
    best = {name: best_of(rs) for name, rs in runs.items()}
    base = n / best["naive"]["seconds"]
    rows = {}
    for name, b in best.items():
        rate = n / b["seconds"]
        rows[name] = {"best_seconds": round(b["seconds"], 3), "records_per_s": round(rate, 1),
                      "vs_naive": round(rate / base, 3), "main_cpu_s": round(b["main_cpu_s"], 2),
                      "pool_cpu_s": round(b["pool_cpu_s"], 2), "others_cores": round(b["others_cores"], 2),
                      **spread(runs[name])}
    return rows


def bench_throughput(work: Path, n: int, repeat: int, idle_wait: float) -> dict:
    """Best of `repeat` interleaved timings of each pipeline on `n` cached photo-like JPEGs."""
    log(f"a. ingest throughput on {n} photo-like {PHOTO_W}x{PHOTO_H} JPEGs")
    root = photo_dataset(work, n)
    jpeg_mb = sum(p.stat().st_size for p in (root / "images").iterdir()) / 1e6
    runs: dict[str, list[dict]] = {name: [] for name in PIPELINES}
    for r in range(repeat):
        for name in runs:
            runs[name].append(_timed_run(name, root, work, n, idle_wait, f"run {r + 1}/{repeat}"))
    rows = _summary(runs, n)
    return {"images": n, "image_size": f"{PHOTO_W}x{PHOTO_H} JPEG q90", "jpeg_mb": round(jpeg_mb, 1),
            "output_size": 64, "repeat": repeat, "runs": rows,
            "goal": "ingest workers=2 >= 1.8x naive", "goal_met": rows["ingest_w2"]["vs_naive"] >= 1.8}


def throughput_table(t: dict) -> list[str]:
    """The markdown table of (a)."""
    out = [f"Ingest throughput, {t['images']} {t['image_size']} -> 64x64 PNG, best of {t['repeat']}:\n",
           "| pipeline | seconds | records/s | vs naive | main-process CPU s | pool CPU s | others' load |",
           "|---|---|---|---|---|---|---|"]
    labels = {"naive": "naive loop (1 process, no draft)", "ingest_w1": "`ingest(workers=1)`",
              "ingest_w2": "`ingest(workers=2)`"}
    for k, r in t["runs"].items():
        pool = f"{r['pool_cpu_s']:.1f}" if k == "ingest_w2" else "-"
        out.append(f"| {labels[k]} | {r['best_seconds']:.2f} | {r['records_per_s']:.0f} | {r['vs_naive']:.2f}x | "
                   f"{r['main_cpu_s']:.1f} | {pool} | {r['others_cores']:.2f} |")
    out.append("")
    return out
