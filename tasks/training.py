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
from tasks.caching import CACHE_EXPIRATION, digest_cache


def _cache_parts(p: dict) -> dict:
    cfg: PipelineConfig = p["cfg"]
    return {"features": read_json(Path(p["features_dir"]) / MANIFEST)["digest"], "config": cfg.digest("heads")}


@task(cache_key_fn=digest_cache("train", _cache_parts, lambda p: [str(Path(p["out_dir"]) / HEADS_FILE)]),
      persist_result=True, cache_expiration=CACHE_EXPIRATION)
def train_heads(features_dir: str, processed_dir: str, cfg: PipelineConfig, out_dir: str, run_id: str) -> str:
    """Train every head the data supports; returns the heads checkpoint path (cached on the features'
    digest, the heads config and the code)."""
    logger = get_run_logger()
    vocab = load_tokenizer(processed_dir).vocab_size
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", features_dir,
                         read_json(Path(features_dir) / MANIFEST)["digest"], "train")
    train = load_features(features_dir, processed_dir, ("train",))
    val = load_features(features_dir, processed_dir, ("val",))
    device = select_device(cfg.heads.device)
    heads, skipped = head_training.train_heads(train, val, cfg.heads, vocab, device,
                                              lambda name: tracking.epoch_logger(run_id, f"{name}_",
                                                                                 _head_epochs(cfg, name)))
    for name, why in skipped.items():
        logger.info("head %s not trained: %s", name, why)
    path = save_heads(heads, Path(out_dir) / HEADS_FILE)
    tracking.log_artifact(run_id, path, "checkpoints")
    tracking.log_tags(run_id, {"answers": len(heads.answers), **{f"skipped_{k}": v for k, v in skipped.items()}})
    return str(path)


def _head_epochs(cfg: PipelineConfig, name: str) -> int:
    """Epochs the head `name` trains for (its progress line's total)."""
    if name in ("translation", "generation"):
        return cfg.heads.text_epochs
    if name.startswith("vqa_"):  # the blind baselines
        return cfg.heads.vqa_baseline_epochs or cfg.heads.epochs
    return cfg.heads.epochs
