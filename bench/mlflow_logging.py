"""Training time with MLflow per-step logging against the same training without it, in one run.

Contrastive pretraining (`mmcore.training.contrastive.pretrain`, what the pretrain stage runs for the
contrastive objective) on the synthetic shapes, batch 32, `log_every_steps=1`: every batch's loss terms go to
a real MLflow SQLite store through `tasks.tracking.StepLogger` (what the pretrain task's hooks send steps to:
buffered, sent as queued batches), and the final flush is inside the timed region. The data is made once,
untimed, by the ingest stage (`mmcore.stages.ingest.run`) on a catalog under a temporary data root, and held
in memory; each timed run trains from scratch into a fresh folder. The two variants alternate (A B A B ...)
so drift on a shared machine hits both; the ratio of medians is the result. Goal (BENCHMARKS.md): <= 1.05.

Run:
    .venv/bin/python -m bench.mlflow_logging --images 800 --epochs 2 --repeats 3 --out bench/results/mlflow_logging.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmcore.catalog import Catalog
    from mmcore.config import PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


def _prepare(cfg: PipelineConfig, images: int) -> Catalog:
    """Synthetic shapes in the catalog's raw folder, ingested (and tokenized) by the ingest stage."""
    from mmcore.catalog import Catalog
    from mmcore.data.synth import generate_shapes
    from mmcore.stages import ingest

    cat = Catalog.from_config(cfg)
    generate_shapes(cat.raw, images, seed=0, image_size=cfg.ingest.image_size)
    ingest.run(cfg, cat, workers=1)
    return cat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mm-bench-mlflow-"))
    os.environ["MM_HOME"] = str(work / "home")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MM_ARTIFACT_ROOT"):
        os.environ.pop(key, None)
    sys.path.insert(0, str(ROOT))
    import torch

    import flows  # noqa: F401  (embedded defaults: MLflow on SQLite under MM_HOME)
    from mmcore.catalog import PretrainDir
    from mmcore.config import load_config
    from mmcore.data.dataset import load_samples, load_tokenizer
    from mmcore.io import write_json
    from mmcore.training.contrastive import pretrain
    from tasks import tracking

    cfg = load_config("demo", {"data_root": str(work / "data"), "pretrain.epochs": args.epochs,
                               "pretrain.batch_size": 32, "pretrain.log_every_steps": 1,
                               "pretrain.objective": "contrastive"})
    cat = _prepare(cfg, args.images)
    train, val = load_samples(cat.processed, ("train",)), load_samples(cat.processed, ("val",))
    vocab = load_tokenizer(cat.processed).vocab_size
    run_id = tracking.start_run(cfg, "bench-mlflow-logging")
    steps_logged = 0

    def once(logged: bool, rep: int) -> float:
        nonlocal steps_logged
        out = PretrainDir(work / f"run-{int(logged)}-{rep}")  # fresh: no checkpoint to resume
        step_log = tracking.StepLogger(run_id, prefix=f"rep{rep}_") if logged else None
        started = time.perf_counter()
        _, result = pretrain(train, val, cfg.encoder, cfg.pretrain, vocab, out, torch.device("cpu"),
                             on_step=step_log)
        if logged:
            step_log.flush()
        seconds = time.perf_counter() - started
        if logged:
            steps_logged = len(tracking.client().get_metric_history(run_id, f"rep{rep}_loss"))
        return seconds

    once(False, -1)  # warm-up: first-call costs (allocator, thread pools) belong to neither variant
    plain, logged = [], []
    for rep in range(args.repeats):
        plain.append(once(False, rep))
        logged.append(once(True, rep))
        print(f"repeat {rep}: without {plain[-1]:.2f} s, with per-step logging {logged[-1]:.2f} s", flush=True)
    tracking.end_run(run_id)
    result = {"images": args.images, "train_samples": len(train), "epochs": args.epochs, "batch_size": 32,
              "steps_logged_per_run": steps_logged, "threads": torch.get_num_threads(),
              "seconds_without": plain, "seconds_with": logged,
              "ratio": round(statistics.median(logged) / statistics.median(plain), 4)}
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
