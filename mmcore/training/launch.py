"""Data-parallel pretraining under torchrun: one process per GPU (or several CPU processes with gloo).

    torchrun --standalone --nproc_per_node 2 -m mmcore.training.launch --preset demo
    torchrun --nnodes 2 --node_rank 0 --master_addr host0 --nproc_per_node 8 -m mmcore.training.launch \
        --preset shapes-large --set data_root=/shared/data

Every rank reads the ingested samples, trains on its share of each epoch (`distributed.shard`), and rank
0 writes the checkpoint and encoder.pt where the pipeline's pretrain stage looks for them, under the
same resume key: the stage then finds the finished run and does not train again. The pretrain task starts
this module itself when `pretrain.processes` > 1.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data.dataset import load_samples, load_tokenizer, read_manifest
from mmcore.training import distributed
from mmcore.training.loop import select_device
from mmcore.training.vqa_pretrain import pretrain_encoder

EVENT = "mm-event "  # prefix of the machine-readable lines (--events) that the pretrain task reads


def _emit(kind: str, **data: object) -> None:
    print(EVENT + json.dumps({"kind": kind, **data}), flush=True)


def resume_key(dataset_digest: str, config_digest: str) -> str:
    """The key a pretraining checkpoint is continued under: same data and same settings."""
    return f"{dataset_digest}:{config_digest}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="preset name or YAML path")
    parser.add_argument("--dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--events", action="store_true",
                        help="report epochs, steps and the summary as JSON lines (prefix 'mm-event ') for a caller")
    args = parser.parse_args(argv)
    cfg = load_config(args.preset, dict(item.split("=", 1) for item in args.set), dataset=args.dataset)
    world = distributed.init_from_env()
    try:
        device = distributed.local_device() if cfg.pretrain.device == "auto" else select_device(cfg.pretrain.device)
        if world > 1 and device.type == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads() // world))  # ranks share the cores
        cat = Catalog.from_config(cfg)
        train, val = load_samples(cat.processed, ("train",)), load_samples(cat.processed, ("val",))
        key = resume_key(read_manifest(cat.processed)["digest"], cfg.digest("ingest", "encoder", "pretrain"))
        started = time.monotonic()

        def log(epoch: int, metrics: dict[str, float]) -> None:  # rank 0 only: the loop calls it there
            if args.events:
                _emit("epoch", epoch=epoch, metrics=metrics)
                return
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "lr")
            print(f"epoch {epoch + 1}: {shown} ({time.monotonic() - started:.0f} s)", flush=True)

        def step(index: int, metrics: dict[str, float]) -> None:  # rank 0, every pretrain.log_every_steps
            _emit("step", step=index, metrics=metrics)

        tokenizer = load_tokenizer(cat.processed)
        objective, _, result = pretrain_encoder(train, val, cfg.encoder, cfg.pretrain, tokenizer.vocab_size,
                                                cat.pretrain, device, log, key, tokenizer,
                                                step if args.events else None)
        if distributed.is_main():
            summary = {"objective": objective, "world": world, "epochs": len(result.history),
                       "resumed_from": result.resumed_from}
            if args.events:
                _emit("summary", **summary)
            else:
                print(json.dumps(summary), flush=True)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
