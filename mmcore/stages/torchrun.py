"""Data-parallel pretraining under torchrun: one process per GPU (or several CPU processes with gloo).

The pretrain stage starts this itself when `pretrain.processes` > 1, with `--spec`: the config and
catalog it resolved, in one file. To start it by hand (several nodes, say), give a preset instead:

    torchrun --standalone --nproc_per_node 2 -m mmcore.stages.torchrun --preset demo
    torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint host0:29400 --rdzv-id run1 --nproc_per_node 8 \
        -m mmcore.stages.torchrun --preset shapes-large --set data_root=/shared/data     (on every node)

or let the stage do it on every node: `mm pretrain --set pretrain.nnodes=2 --set pretrain.processes=8
--set pretrain.rdzv_endpoint=host0:29400 --set data_root=/shared/data`.

Every rank reads the ingested samples and trains on its share of each epoch (`distributed.shard`); rank 0
writes the checkpoint and the encoder where the pretrain stage looks for them, under the same resume key,
so the stage then finds the finished run and does not train again.
"""

from __future__ import annotations

import argparse
import json
import os

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.io import read_json
from mmcore.stages.hooks import Hooks, Metrics, PrintHooks
from mmcore.stages.pretrain import EVENT, train_here
from mmcore.training import distributed


class EventHooks(Hooks):
    """Epochs and steps as JSON lines on stdout, for the launching stage to read (rank 0 only reports)."""

    def epoch(self, part: str, epoch: int, epochs: int, metrics: Metrics, items: int | None = None) -> None:
        emit("epoch", epoch=epoch, metrics=metrics, items=items)

    def step(self, part: str, step: int, metrics: Metrics) -> None:
        emit("step", step=step, metrics=metrics)


def emit(kind: str, **data: object) -> None:
    print(EVENT + json.dumps({"kind": kind, **data}), flush=True)


def _resolve(args: argparse.Namespace) -> tuple[PipelineConfig, Catalog]:
    if args.spec:
        spec = read_json(args.spec)
        return PipelineConfig.model_validate(spec["config"]), Catalog.from_json(spec["catalog"])
    cfg = load_config(args.preset, dict(item.split("=", 1) for item in args.set), dataset=args.dataset)
    return cfg, Catalog.from_config(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="the config and catalog the pretrain stage wrote (PretrainDir.launch_spec)")
    parser.add_argument("--preset", default="demo", help="without --spec: preset name or YAML path")
    parser.add_argument("--dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--events", action="store_true",
                        help="report epochs, steps and the summary as JSON lines (prefix 'mm-event ') for a caller")
    args = parser.parse_args(argv)
    cfg, cat = _resolve(args)
    world = distributed.init_from_env()
    try:
        objective, result = train_here(cfg, cat, EventHooks() if args.events else PrintHooks())
        distributed.barrier()  # no node's stage goes on before rank 0 has written the checkpoint and encoder
        if distributed.is_main() or os.environ.get("LOCAL_RANK") == "0":  # each node's launcher gets a summary
            summary = {"objective": objective, "world": world, "epochs": len(result.history),
                       "resumed_from": result.resumed_from}
            if args.events:
                emit("summary", **summary)
            else:
                print(json.dumps(summary), flush=True)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
