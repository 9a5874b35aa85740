"""The pipeline's stages called directly, in one process, without Prefect or MLflow.

The same stage functions the Prefect tasks call (`mmcore.stages.pipeline.run`), writing to the same catalog
locations. Used to measure model quality where only the library is installed (a GPU machine), and as the
reference run that orchestration overhead is measured against.

Run:
    python -m bench.direct --preset easy-vqa --out bench/results/quality-easy-vqa.json
    python -m bench.direct --preset demo --set pretrain.epochs=2
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig, load_config
from mmcore.stages import pipeline
from mmcore.stages.hooks import Hooks, PrintHooks
from mmcore.training.loop import select_device


def run_direct(cfg: PipelineConfig, workers: int | None = None, log: bool = True) -> dict[str, Any]:
    """Runs ingest -> pretrain -> extract -> train -> evaluate; returns metrics and seconds per stage."""
    result = pipeline.run(cfg, Catalog.from_config(cfg), PrintHooks() if log else Hooks(), workers)
    return {"metrics": result.evaluate.metrics, "examples": result.evaluate.examples, "seconds": result.seconds,
            "objective": result.pretrain.objective, "skipped": result.train.skipped,
            "ingest": {k: v for k, v in asdict(result.ingest).items() if k != "processed"},
            "device": str(select_device(cfg.pretrain.device)), "config": cfg.model_dump(mode="json")}


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
    cfg = load_config(args.preset, dict(item.split("=", 1) for item in args.set), dataset=args.dataset)
    result = run_direct(cfg)
    print(json.dumps({"metrics": result["metrics"], "seconds": result["seconds"], "device": result["device"]},
                     indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n",
                                  encoding="utf-8")


if __name__ == "__main__":
    main()
