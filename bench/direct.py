"""The pipeline's stages called directly, in one process, without Prefect or MLflow.

The same mmcore functions the tasks call, in the same order, writing to the same catalog locations. Used
to measure model quality where only the library is installed (a GPU machine), and as the reference run
that orchestration overhead is measured against.

Run:
    python -m bench.direct --preset easy-vqa --out bench/results/quality-easy-vqa.json
    python -m bench.direct --preset demo --set pretrain.epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.data import dataset as ds
from mmcore.data.ingest import ingest
from mmcore.data.sources import open_source
from mmcore.evaluation import evaluate_all
from mmcore.features import extract_shard, load_features, write_manifest
from mmcore.io import file_sha256
from mmcore.training.contrastive import ENCODER_FILE, load_encoder
from mmcore.training.heads import HEADS_FILE, load_heads, save_heads, train_heads
from mmcore.training.launch import resume_key
from mmcore.training.loop import select_device
from mmcore.training.vqa_pretrain import pretrain_encoder


def _printer(prefix: str):
    started = time.monotonic()

    def log(epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr")
        print(f"{prefix}epoch {epoch + 1}: {shown} ({time.monotonic() - started:.0f} s)", flush=True)

    return log


def run_direct(cfg: PipelineConfig, workers: int | None = None, log: bool = True) -> dict[str, Any]:
    """Runs ingest -> pretrain -> extract -> heads -> evaluate; returns metrics and seconds per stage."""
    cat = Catalog.from_config(cfg)
    seconds: dict[str, float] = {}
    device = select_device(cfg.pretrain.device)
    cb = _printer if log else (lambda prefix: None)

    t = time.perf_counter()
    report = ingest(open_source(cat.source, cfg.ingest.format), cat.processed, cfg.ingest,
                    workers or os.cpu_count() or 1)
    tokenizer = ds.fit_tokenizer([s.samples_path for s in report.shards], cfg.ingest.vocab_size,
                                 cat.processed / ds.TOKENIZER)
    for shard in report.shards:
        ds.tokenize_shard(shard.samples_path, tokenizer, cfg.encoder.max_text_len)
    manifest = ds.build_manifest(cat.processed, report, tokenizer, {"ingest_config_digest": cfg.digest("ingest")})
    seconds["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    train, val = ds.load_samples(cat.processed, ("train",)), ds.load_samples(cat.processed, ("val",))
    vocab = ds.load_tokenizer(cat.processed).vocab_size
    key = resume_key(manifest["digest"], cfg.digest("ingest", "encoder", "pretrain"))
    objective, _, _ = pretrain_encoder(train, val, cfg.encoder, cfg.pretrain, vocab, cat.pretrain, device,
                                       cb("pretrain "), key)
    del train, val
    seconds["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    encoder_path = cat.pretrain / ENCODER_FILE
    model = load_encoder(encoder_path, device)
    digest = file_sha256(encoder_path)
    cat.features.mkdir(parents=True, exist_ok=True)
    shards = [extract_shard(model, cat.processed / s["samples"], cat.processed / s["tokens"],
                            cat.features / s["samples"].replace("samples-", "features-"), digest, device)
              for s in manifest["shards"]]
    write_manifest(cat.features, shards, encoder_path, cat.processed)
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    train_f = load_features(cat.features, cat.processed, ("train",))
    val_f = load_features(cat.features, cat.processed, ("val",))
    heads, skipped = train_heads(train_f, val_f, cfg.heads, vocab, device, lambda name: cb(f"{name} "))
    cat.heads.mkdir(parents=True, exist_ok=True)
    save_heads(heads, cat.heads / HEADS_FILE)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    test_f = load_features(cat.features, cat.processed, ("test",))
    metrics, examples = evaluate_all(train_f, test_f, load_heads(cat.heads / HEADS_FILE, device),
                                     ds.load_tokenizer(cat.processed), device, cfg)
    seconds["evaluate"] = time.perf_counter() - t
    return {"metrics": metrics, "examples": examples, "seconds": seconds, "objective": objective,
            "skipped": skipped, "device": str(device), "config": cfg.model_dump(mode="json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = load_config(args.preset, overrides, dataset=args.dataset)
    result = run_direct(cfg)
    print(json.dumps({"metrics": result["metrics"], "seconds": result["seconds"], "device": result["device"]},
                     indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
