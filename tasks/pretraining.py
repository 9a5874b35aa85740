"""Pretraining task: contrastive training of the dual encoder on the ingested samples."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_samples, load_tokenizer, read_manifest
from mmcore.training.contrastive import ENCODER_FILE, pretrain
from mmcore.training.loop import select_device
from mmcore.training.vqa_pretrain import pretrain_vqa, resolve_objective
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
    objective = resolve_objective(cfg.pretrain.objective, train)
    tracking.log_tags(run_id, {"pretrain_objective": objective})
    # Same data and config: a checkpoint left by a killed (or finished) run is continued, not redone.
    key = f"{digest}:{cfg.digest('ingest', 'encoder', 'pretrain')}"
    train_fn = pretrain if objective == "contrastive" else pretrain_vqa
    _, result = train_fn(train, val, cfg.encoder, cfg.pretrain, tokenizer.vocab_size, out_dir, device,
                         on_epoch=tracking.epoch_logger(run_id), resume_key=key)
    tracking.log_metrics(run_id, {"resumed_from_epoch": result.resumed_from})
    encoder = Path(out_dir) / ENCODER_FILE
    tracking.log_artifact(run_id, encoder, "checkpoints")
    if result.history:
        tracking.log_metrics(run_id, {f"final_{k}": v for k, v in result.history[-1].items()})
    return str(encoder)
