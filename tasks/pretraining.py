"""Pretraining task: the dual encoder trained on the ingested samples (contrastive, or through a VQA head)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_samples, load_tokenizer, read_manifest
from mmcore.training.contrastive import ENCODER_FILE
from mmcore.training.loop import select_device
from mmcore.training.vqa_pretrain import pretrain_encoder as pretrain_encoder_on
from tasks import tracking


@task
def pretrain_encoder(processed_dir: str, cfg: PipelineConfig, out_dir: str, run_id: str) -> str:
    """Train the image and text encoders into one embedding space; returns the encoder checkpoint path."""
    tokenizer = load_tokenizer(processed_dir)
    train = load_samples(processed_dir, ("train",))
    val = load_samples(processed_dir, ("val",))
    digest = read_manifest(processed_dir)["digest"]
    tracking.log_dataset(run_id, f"{cfg.dataset}-samples", processed_dir, digest, "train")
    tracking.log_tags(run_id, {"dataset_digest": digest, "train_samples": len(train), "val_samples": len(val)})
    device = select_device(cfg.pretrain.device)
    # Same data and config: a checkpoint left by a killed (or finished) run is continued, not redone.
    key = f"{digest}:{cfg.digest('ingest', 'encoder', 'pretrain')}"
    objective, _, result = pretrain_encoder_on(train, val, cfg.encoder, cfg.pretrain, tokenizer.vocab_size, out_dir,
                                               device, tracking.epoch_logger(run_id), key)
    tracking.log_tags(run_id, {"pretrain_objective": objective})
    tracking.log_metrics(run_id, {"resumed_from_epoch": result.resumed_from})
    encoder = Path(out_dir) / ENCODER_FILE
    tracking.log_artifact(run_id, encoder, "checkpoints")
    if result.history:
        tracking.log_metrics(run_id, {f"final_{k}": v for k, v in result.history[-1].items()})
    return str(encoder)
