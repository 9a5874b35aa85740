"""Pretraining task: the dual encoder trained on the ingested samples (contrastive, or through a VQA head)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from prefect import get_run_logger, task

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_samples, load_tokenizer, read_manifest
from mmcore.training.contrastive import CHECKPOINT_FILE, ENCODER_FILE
from mmcore.training.launch import EVENT, resume_key
from mmcore.training.loop import select_device
from mmcore.training.vqa_pretrain import pretrain_encoder as pretrain_encoder_on
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, digest_cache


def _cache_parts(p: dict) -> dict:
    cfg: PipelineConfig = p["cfg"]
    return {"data": read_manifest(p["processed_dir"])["digest"], "config": cfg.digest("ingest", "encoder", "pretrain")}


@task(cache_key_fn=digest_cache("pretrain", _cache_parts, lambda p: [str(Path(p["out_dir"]) / ENCODER_FILE)]),
      persist_result=True, cache_expiration=CACHE_EXPIRATION)
def pretrain_encoder(processed_dir: str, cfg: PipelineConfig, out_dir: str, run_id: str, fresh: bool = False) -> str:
    """Train the image and text encoders into one embedding space; returns the encoder checkpoint path.

    Cached on the dataset's digest, the config and the code. With `fresh`, a checkpoint left by an
    earlier run is discarded instead of resumed.
    """
    if fresh:
        (Path(out_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
    manifest = read_manifest(processed_dir)
    digest, splits = manifest["digest"], manifest["splits"]
    tracking.log_dataset(run_id, f"{cfg.dataset}-samples", processed_dir, digest, "train")
    tracking.log_tags(run_id, {"dataset_digest": digest, "train_samples": splits.get("train", 0),
                               "val_samples": splits.get("val", 0)})
    # Same data and config: a checkpoint left by a killed (or finished) run is continued, not redone.
    key = resume_key(digest, cfg.digest("ingest", "encoder", "pretrain"))
    if cfg.pretrain.processes > 1:  # the ranks load the samples themselves
        objective, history, resumed = _torchrun(cfg, out_dir, run_id, splits.get("train", 0))
    else:
        tokenizer = load_tokenizer(processed_dir)
        train, val = load_samples(processed_dir, ("train",)), load_samples(processed_dir, ("val",))
        on_epoch = tracking.epoch_logger(run_id, epochs=cfg.pretrain.epochs, items_per_epoch=len(train))
        on_step = tracking.step_logger(run_id)
        objective, _, result = pretrain_encoder_on(train, val, cfg.encoder, cfg.pretrain, tokenizer.vocab_size,
                                                   out_dir, select_device(cfg.pretrain.device), on_epoch, key,
                                                   tokenizer, on_step)
        on_step.flush()
        history, resumed = result.history, result.resumed_from
    tracking.log_tags(run_id, {"pretrain_objective": objective, "pretrain_processes": cfg.pretrain.processes})
    tracking.log_metrics(run_id, {"resumed_from_epoch": resumed})
    encoder = Path(out_dir) / ENCODER_FILE
    tracking.log_artifact(run_id, encoder, "checkpoints")
    if history:
        tracking.log_metrics(run_id, {f"final_{k}": v for k, v in history[-1].items()})
    return str(encoder)


def _torchrun(cfg: PipelineConfig, out_dir: str, run_id: str,
              train_samples: int) -> tuple[str, list[dict[str, float]], int]:
    """Runs the stage as `pretrain.processes` DDP processes (mmcore.training.launch) and waits for them.

    Rank 0 reports each epoch (and every `pretrain.log_every_steps`-th batch) as a JSON line, which goes
    to MLflow and to this task's log as it arrives; other output goes to the log line by line. Returns
    the objective, the history and the epoch resumed from.
    """
    logger = get_run_logger()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    config = Path(out_dir) / "launch-config.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.pretrain.processes}",
           "-m", "mmcore.training.launch", "--preset", str(config), "--events"]
    logger.info("starting %d data-parallel processes: %s", cfg.pretrain.processes, " ".join(cmd))
    on_epoch = tracking.epoch_logger(run_id, epochs=cfg.pretrain.epochs, items_per_epoch=train_samples)
    on_step = tracking.step_logger(run_id)
    summary: dict = {}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith(EVENT):
                event = json.loads(line[len(EVENT):])
                if event["kind"] == "epoch":
                    on_epoch(event["epoch"], event["metrics"])
                elif event["kind"] == "step":
                    on_step(event["step"], event["metrics"])
                else:
                    summary = event
            elif line:
                logger.info("%s", line)
    on_step.flush()
    if proc.returncode:
        raise RuntimeError(f"data-parallel pretraining failed (exit {proc.returncode}); its output is in the log above")
    history = torch.load(Path(out_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["history"]
    return summary["objective"], list(history), int(summary["resumed_from"])
