"""Head-training task: the VQA classifier and the caption decoder on frozen features."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.features import MANIFEST, load_features
from mmcore.io import read_json
from mmcore.training.heads import HEADS_FILE, build_heads, save_heads, train_captioner, train_vqa
from mmcore.training.loop import select_device
from tasks import tracking


@task
def train_heads(features_dir: str, processed_dir: str, cfg: PipelineConfig, out_dir: str, run_id: str) -> str:
    """Train both heads; returns the heads checkpoint path."""
    vocab = load_tokenizer(processed_dir).vocab_size
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", features_dir,
                         read_json(Path(features_dir) / MANIFEST)["digest"], "train")
    train = load_features(features_dir, processed_dir, ("train",))
    val = load_features(features_dir, processed_dir, ("val",))
    device = select_device(cfg.heads.device)
    vqa, answers = train_vqa(train, val, cfg.heads, vocab, device, tracking.epoch_logger(run_id, "vqa_"))
    captioner = train_captioner(train, val, cfg.heads, vocab, device, tracking.epoch_logger(run_id, "caption_"))
    path = save_heads(build_heads(vqa, answers, captioner, train, vocab, cfg.heads), Path(out_dir) / HEADS_FILE)
    tracking.log_artifact(run_id, path, "checkpoints")
    tracking.log_tags(run_id, {"answers": len(answers)})
    return str(path)
