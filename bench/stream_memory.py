"""Streaming training data against the in-memory path: peak memory as the dataset grows, and throughput.

    python -m bench.stream_memory --out bench/results/stream.json

(a) Peak RSS of contrastive pretraining (smoke encoder, 32 px, batch 32) on 10k and on 100k samples, each in a
    fresh process that stops after --steps optimizer steps (the peak comes early: the in-memory path holds
    the whole split from its first step, the stream a shuffle buffer and the batches in flight). The 100k
    dataset is the 10k one's shards copied ten times under other names, listed in one manifest.
(b) Pretraining samples/s on the demo data (demo preset, 64 px, batch 64, random batches: hard negatives
    off, since a stream takes random batches), in memory against streamed with 0 and 1 decoding workers,
    each measured twice, interleaved, over the steps after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench.machine import log, peak_rss_mb, run_child

REPO = Path(__file__).resolve().parent.parent
WARMUP = 10  # steps before the clock starts


class Enough(Exception):
    """Raised from the step callback once the measured steps are done."""


def prepare(root: Path, images: int, preset: str, copies: int = 1) -> str:
    """The data root of `images` synthetic scenes of `preset`, ingested (cached in `root`); with `copies` > 1 a
    second processed folder whose manifest lists every shard that many times, as copies. Returns the
    processed folder."""
    from mmcore.catalog import Catalog, ProcessedDir
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes
    from mmcore.io import read_json, write_json
    from mmcore.stages import ingest

    cfg = load_config(preset, {"data_root": str(root)})
    cat = Catalog.from_config(cfg)
    if not cat.processed.manifest.is_file():
        generate_shapes(cat.raw, images, seed=11, image_size=max(32, cfg.ingest.image_size))
        ingest.run(cfg, cat, workers=2)
    if copies == 1:
        return str(cat.processed.path)
    big = cat.processed.path.parent / f"{cat.processed.path.name}-x{copies}"
    if not ProcessedDir(big).manifest.is_file():
        big.mkdir(exist_ok=True)
        manifest = read_json(cat.processed.manifest)
        shards = []
        for copy in range(copies):
            for entry in manifest["shards"]:
                files = ("samples", "tokens", "rejects")
                renamed = {k: (f"c{copy}-{v}" if k in files else v) for k, v in entry.items()}
                for kind in files:
                    if kind in entry:
                        shutil.copyfile(cat.processed.path / entry[kind], big / renamed[kind])
                shards.append(renamed)
        shutil.copyfile(cat.processed.tokenizer, big / cat.processed.tokenizer.name)
        write_json(ProcessedDir(big).manifest, {**manifest, "shards": shards})
    return str(big)


def child(processed: str, preset: str, data: str, workers: int, steps: int) -> None:
    """Runs in a fresh process: pretraining of `preset` on `processed` for `steps` steps, one JSON line out."""
    import tempfile

    import torch

    from mmcore.catalog import PretrainDir, ProcessedDir
    from mmcore.config import load_config
    from mmcore.data.dataset import load_samples, load_tokenizer
    from mmcore.data.stream import PairStream, split_shards
    from mmcore.training.contrastive import pretrain

    torch.set_num_threads(2)
    cfg = load_config(preset, {"pretrain.data": data, "pretrain.loader_workers": workers,
                               "pretrain.hard_negatives": 0, "pretrain.epochs": 1, "pretrain.log_every_steps": 1,
                               "pretrain.objective": "contrastive"})
    out = ProcessedDir(Path(processed))
    started = time.perf_counter()
    train = (PairStream(split_shards(out, "train"), cfg.pretrain.batch_size, 0, cfg.pretrain.shuffle_buffer)
             if data == "stream" else load_samples(out, ("train",)))
    loaded = time.perf_counter() - started
    val = load_samples(out, ("val",))
    clock: dict[str, float] = {}

    def on_step(n: int, metrics: dict) -> None:
        if n == WARMUP - 1:
            clock["start"] = time.perf_counter()
        if n == WARMUP + steps - 1:
            clock["end"] = time.perf_counter()
            raise Enough

    with tempfile.TemporaryDirectory() as tmp:
        try:
            pretrain(train, val, cfg.encoder, cfg.pretrain, load_tokenizer(out).vocab_size, PretrainDir(Path(tmp)),
                     torch.device("cpu"), on_step=on_step)
        except Enough:
            pass
    samples = train.samples if data == "stream" else len(train)
    rate = steps * cfg.pretrain.batch_size / (clock["end"] - clock["start"])
    print(json.dumps({"data": data, "workers": workers, "samples": samples, "load_seconds": round(loaded, 2),
                      "samples_per_s": round(rate, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


def _run(processed: str, preset: str, data: str, workers: int, steps: int) -> dict:
    cmd = [sys.executable, "-m", "bench.stream_memory", "--child", processed, preset, data, str(workers), str(steps)]
    return run_child(cmd, REPO, f"{preset} {data} workers={workers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, metavar=("PROCESSED", "PRESET", "DATA", "WORKERS", "STEPS"))
    parser.add_argument("--root", default=str(REPO / ".mm" / "bench-stream"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "stream.json"))
    parser.add_argument("--steps", type=int, default=60, help="measured steps per run")
    parser.add_argument("--part", choices=("memory", "throughput", "all"), default="all")
    args = parser.parse_args()
    if args.child:
        processed, preset, data, workers, steps = args.child
        child(processed, preset, data, int(workers), int(steps))
        return
    root, out = Path(args.root), Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if args.part in ("memory", "all"):
        small = prepare(root / "smoke-10k", 10_000, "smoke")
        large = prepare(root / "smoke-10k", 10_000, "smoke", copies=10)
        results["memory"] = {f"{data}-{size}": _run(path, "smoke", data, 0, args.steps)
                             for size, path in (("10k", small), ("100k", large)) for data in ("stream", "memory")}
        results["memory_steps"] = args.steps
    if args.part in ("throughput", "all"):  # the demo's epoch is 37 steps: measure within the first
        demo = prepare(root / "demo", 3000, "demo")
        results["throughput"] = [{f"{data}-w{w}": _run(demo, "demo", data, w, min(args.steps, 25))
                                  for data, w in (("memory", 0), ("stream", 0), ("stream", 1))} for _ in range(2)]
        results["throughput_steps"] = min(args.steps, 25)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    log(f"written to {out}")


if __name__ == "__main__":
    main()
