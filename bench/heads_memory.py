"""Head training on features spilled to disk against features held in memory: peak memory as the data grows,
and throughput.

    python -m bench.heads_memory --out bench/results/heads_memory.json

The features are the demo preset's (mobilenet_v3_small at 64 px: a 664 x 16 grid per image, 42 KB), from an
encoder pretrained for one epoch on 10,000 synthetic scenes; the 100k features are the 10k shards copied ten
times under other names (sample, token and feature shards alike), listed in one manifest each.

Each measurement is a fresh process that loads the train and val splits as the train stage does, then trains
the VQA head for --steps batches and stops. It reports the peak RSS (VmHWM), the seconds to load, and the
questions/s over the steps after a warm-up. "disk" is what the train stage does (`load_features(spill=...)`,
the image vectors read batch by batch through `DiskRows`); "memory" holds them as arrays.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import log, peak_rss_mb, run_child
from bench.stream_memory import prepare

REPO = Path(__file__).resolve().parent.parent
WARMUP = 20  # batches before the clock starts


class Enough(Exception):
    """Raised once the measured batches are done."""


def features(root: Path, images: int, copies: int) -> tuple[str, str]:
    """(processed folder, features folder) of `images` demo scenes, pretrained one epoch and extracted (cached
    in `root`); with `copies` > 1, folders whose manifests list every shard that many times, as copies."""
    from mmcore.catalog import Catalog
    from mmcore.config import load_config
    from mmcore.io import read_json, write_json
    from mmcore.stages import extract, pretrain

    processed = Path(prepare(root, images, "demo", copies))
    cfg = load_config("demo", {"data_root": str(root), "pretrain.epochs": 1, "pretrain.hard_negatives": 0})
    cat = Catalog.from_config(cfg)
    if not cat.features.manifest.is_file():
        pretrain.run(cfg, cat)
        extract.run(cfg, cat)
    if copies == 1:
        return str(processed), str(cat.features.path)
    big = cat.features.path.parent / f"{cat.features.path.name}-x{copies}"
    if not (big / cat.features.manifest.name).is_file():
        big.mkdir(exist_ok=True)
        manifest = read_json(cat.features.manifest)
        shards = []
        for copy in range(copies):
            for entry in manifest["shards"]:
                shutil.copyfile(cat.features.path / entry["path"], big / f"c{copy}-{entry['path']}")
                shards.append({**entry, "path": f"c{copy}-{entry['path']}"})
        write_json(big / cat.features.manifest.name, {**manifest, "shards": shards, "rows": manifest["rows"] * copies})
    return str(processed), str(big)


def child(processed: str, features_path: str, where: str, steps: int) -> None:
    """Runs in a fresh process: load as the train stage does, train the VQA head `steps` batches; one JSON line."""
    import torch

    from mmcore.catalog import FeaturesDir, ProcessedDir
    from mmcore.config import load_config
    from mmcore.data.dataset import load_tokenizer
    from mmcore.features import load_features
    from mmcore.training import heads as H

    torch.set_num_threads(2)
    cfg = load_config("demo").heads
    out, feats = ProcessedDir(Path(processed)), FeaturesDir(Path(features_path))
    clock: dict[str, float] = {}
    fit = H.fit

    def limited(model, fit_cfg, batches, step, validate, **kw):  # noqa: ANN001, ANN202
        def few(epoch: int):  # noqa: ANN202
            for n, batch in enumerate(batches(epoch)):
                if n == WARMUP:
                    clock["start"] = time.perf_counter()
                if n == WARMUP + steps:
                    clock["end"] = time.perf_counter()
                    raise Enough
                yield batch
        return fit(model, fit_cfg, few, step, validate, **kw)

    H.fit = limited
    with tempfile.TemporaryDirectory(dir=Path(features_path).parent) as scratch:
        started = time.perf_counter()
        spill = (lambda split: Path(scratch) / split) if where == "disk" else (lambda split: None)  # noqa: E731
        train, val = (load_features(feats, out, (split,), spill(split), text_embeddings=False)
                      for split in ("train", "val"))
        loaded = time.perf_counter() - started
        read_ms = _batch_read_ms(train, cfg.batch_size)
        try:
            H.train_vqa(train, val, cfg, load_tokenizer(out).vocab_size, torch.device("cpu"))
        except Enough:
            pass
    rate = steps * cfg.batch_size / (clock["end"] - clock["start"])
    print(json.dumps({"where": where, "samples": len(train), "load_seconds": round(loaded, 2),
                      "batch_read_ms": read_ms, "step_ms": round(1e3 * cfg.batch_size / rate, 2),
                      "questions_per_s": round(rate, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


def _batch_read_ms(train, batch: int, batches: int = 200) -> float:  # noqa: ANN001
    """Milliseconds to gather the grid and pooled vectors of one batch of random samples, as the heads do."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [rng.integers(0, len(train), batch).tolist() for _ in range(batches)]
    started = time.perf_counter()
    for idx in rows:
        train.grid[idx], train.pooled[idx]
    return round(1e3 * (time.perf_counter() - started) / batches, 3)


def _run(processed: str, features_path: str, where: str, steps: int) -> dict:
    cmd = [sys.executable, "-m", "bench.heads_memory", "--child", processed, features_path, where, str(steps)]
    return run_child(cmd, REPO, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("PROCESSED", "FEATURES", "WHERE", "STEPS"))
    parser.add_argument("--root", default=str(REPO / ".mm" / "bench-heads"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "heads_memory.json"))
    parser.add_argument("--steps", type=int, default=100, help="measured batches per run")
    args = parser.parse_args()
    if args.child:
        processed, features_path, where, steps = args.child
        child(processed, features_path, where, int(steps))
        return
    root = Path(args.root)
    sizes = {"10k": features(root, 10_000, 1), "100k": features(root, 10_000, 10)}
    results = {"steps": args.steps, "runs": [{f"{where}-{size}": _run(*sizes[size], where, args.steps)
                                               for size in sizes for where in ("disk", "memory")} for _ in range(2)]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    log(f"written to {out}")


if __name__ == "__main__":
    main()
