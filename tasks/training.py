"""Head-training task: the VQA classifier and the caption decoder on frozen features."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.features import MANIFEST, load_features
from mmcore.io import read_json
from mmcore.training import heads as head_training
from mmcore.training.heads import HEADS_FILE, save_heads
from mmcore.training.loop import select_device
from tasks import tracking


@task
def train_heads(features_dir: str, processed_dir: str, cfg: PipelineConfig, out_dir: str, run_id: str) -> str:
    """Train every head the data supports; returns the heads checkpoint path."""
    logger = get_run_logger()
    vocab = load_tokenizer(processed_dir).vocab_size
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", features_dir,
                         read_json(Path(features_dir) / MANIFEST)["digest"], "train")
    train = load_features(features_dir, processed_dir, ("train",))
    val = load_features(features_dir, processed_dir, ("val",))
    device = select_device(cfg.heads.device)
    heads, skipped = head_training.train_heads(train, val, cfg.heads, vocab, device,
                                              lambda name: tracking.epoch_logger(run_id, f"{name}_"))
    for name, why in skipped.items():
        logger.info("head %s not trained: %s", name, why)
    path = save_heads(heads, Path(out_dir) / HEADS_FILE)
    tracking.log_artifact(run_id, path, "checkpoints")
    tracking.log_tags(run_id, {"answers": len(heads.answers), **{f"skipped_{k}": v for k, v in skipped.items()}})
    return str(path)
