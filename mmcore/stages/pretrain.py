"""Pretrain: the image and text encoders aligned in one embedding space (or, for data without captions, the
image encoder trained through a VQA head), resumed from its checkpoint when a run was killed (a checkpoint
that does not load is discarded with a warning: the run starts from scratch).

With `pretrain.processes` > 1 the training runs as that many data-parallel processes under torchrun
(`mmcore.stages.torchrun`): this process launches them, hands them the config and catalog in one file,
and passes what rank 0 reports on to its hooks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from mmcore import integrity
from mmcore.catalog import SECTIONS, Catalog, PretrainDir
from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_samples, load_tokenizer, read_manifest
from mmcore.data.stream import PairStream, QuestionStream, split_shards
from mmcore.io import file_sha256, write_json
from mmcore.stages.hooks import Hooks
from mmcore.training import distributed
from mmcore.training.loop import FitResult, select_device
from mmcore.training.vqa_pretrain import pretrain_encoder, stream_targets

EVENT = "mm-event "  # prefix of the JSON lines rank 0 reports to the launcher


@dataclass(frozen=True)
class PretrainResult:
    pretrain: PretrainDir
    encoder_sha256: str
    dataset_digest: str
    objective: str  # contrastive or vqa
    processes: int
    train_samples: int
    val_samples: int
    resumed_from: int  # epochs a killed run had already done
    final: dict[str, float]  # the last epoch's metrics
    checkpoint_sha256: str  # the resume checkpoint, which the result stands for too

    @property
    def outputs(self) -> dict[Path, str]:
        """The files this result stands for, with the sha256 each had when it was written."""
        return {self.pretrain.encoder: self.encoder_sha256, self.pretrain.checkpoint: self.checkpoint_sha256}


def inputs(cfg: PipelineConfig, cat: Catalog) -> dict[str, str]:
    """What the encoder depends on: the dataset, the config sections and where it is written."""
    return {"dataset": cat.processed.digest(), "config": cfg.digest(*SECTIONS["pretrain"]),
            "out": str(cat.pretrain.path.resolve())}


def resume_key(cfg: PipelineConfig, cat: Catalog) -> str:
    """The key a checkpoint is continued under: same data and same settings."""
    return f"{cat.processed.digest()}:{cfg.digest(*SECTIONS['pretrain'])}"


def run(cfg: PipelineConfig, cat: Catalog, hooks: Hooks | None = None, fresh: bool = False) -> PretrainResult:
    """Train the encoders (in this process, or under torchrun); `fresh` discards an earlier run's checkpoint
    instead of resuming it."""
    hooks = hooks or Hooks()
    checkpoint = cat.pretrain.checkpoint
    if fresh:
        checkpoint.unlink(missing_ok=True)  # not read: a fresh run replaces it
    elif checkpoint.exists() and (why := integrity.torch_problem(checkpoint)) is not None:
        hooks.warn(f"{checkpoint} is corrupt ({why}): training from scratch")
        checkpoint.unlink()
    splits = read_manifest(cat.processed)["splits"]
    if cfg.pretrain.processes > 1 or cfg.pretrain.nnodes > 1:
        objective, resumed = _launch(cfg, cat, hooks)
    else:
        objective, fitted = train_here(cfg, cat, hooks)
        resumed = fitted.resumed_from
    hooks.flush()
    history = integrity.load_torch(checkpoint, "pretrain")["history"]
    return PretrainResult(cat.pretrain, file_sha256(cat.pretrain.encoder), cat.processed.digest(), objective,
                          cfg.pretrain.processes, splits.get("train", 0), splits.get("val", 0), resumed,
                          dict(history[-1]) if history else {}, file_sha256(checkpoint))


def train_here(cfg: PipelineConfig, cat: Catalog, hooks: Hooks) -> tuple[str, FitResult]:
    """This process's part of the training: all of it, or one rank's under torchrun."""
    if distributed.world() > 1 and cfg.pretrain.device == "auto":
        device = distributed.local_device()
    else:
        device = select_device(cfg.pretrain.device)
    if distributed.world() > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // distributed.world()))  # ranks share the cores
    tokenizer = load_tokenizer(cat.processed)
    val = load_samples(cat.processed, ("val",))
    train = stream(cfg, cat) if cfg.pretrain.data == "stream" else load_samples(cat.processed, ("train",))
    on_epoch = hooks.epoch_callback("", cfg.pretrain.epochs, train.samples if cfg.pretrain.data == "stream"
                                    else len(train))
    objective, _, result = pretrain_encoder(train, val, cfg.encoder, cfg.pretrain, tokenizer.vocab_size, cat.pretrain,
                                            device, on_epoch, resume_key(cfg, cat), tokenizer,
                                            lambda step, metrics: hooks.step("", step, metrics))
    return objective, result


def launch_command(cfg: PipelineConfig, cat: Catalog) -> list[str]:
    """The torchrun command of this node: standalone on one node; with `pretrain.nnodes` > 1 a c10d
    rendezvous at `pretrain.rdzv_endpoint`, whose id every node derives from the same data and settings."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if cfg.pretrain.nnodes == 1:
        cmd.append("--standalone")
    else:
        run = hashlib.sha256(resume_key(cfg, cat).encode()).hexdigest()[:16]
        cmd += [f"--nnodes={cfg.pretrain.nnodes}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={cfg.pretrain.rdzv_endpoint}", f"--rdzv-id=mmcore-{run}"]
    return cmd + [f"--nproc_per_node={cfg.pretrain.processes}", "-m", "mmcore.stages.torchrun",
                  "--spec", str(cat.pretrain.launch_spec), "--events"]


def stream(cfg: PipelineConfig, cat: Catalog) -> PairStream:
    """The training split read from the shards as training goes (never all in memory): image-caption pairs
    for the contrastive objective, images with their questions for the VQA one (`auto`: pairs when there
    are captions). Only the questions' text is read up front, for the answer classes."""
    per_rank, pre = max(2, cfg.pretrain.batch_size // distributed.world()), cfg.pretrain
    pairs = split_shards(cat.processed, "train") if pre.objective != "vqa" else []
    if pairs:
        return PairStream(pairs, per_rank, pre.seed, pre.shuffle_buffer)
    if pre.objective == "contrastive":
        raise ValueError("contrastive pretraining needs training samples with captions; the training split has none")
    answers, soft = stream_targets(load_samples(cat.processed, ("train",), with_images=False).qa)
    return QuestionStream(split_shards(cat.processed, "train", "qa"), per_rank, answers, soft, pre.seed,
                          pre.shuffle_buffer)


def _launch(cfg: PipelineConfig, cat: Catalog, hooks: Hooks) -> tuple[str, int]:
    """Runs this node's `pretrain.processes` torchrun processes and waits for them (and, on several nodes, for
    the others: every rank leaves only once rank 0 has written the checkpoint and the encoder).

    Rank 0 reports epochs, steps and a summary as JSON lines, which go to `hooks` as they arrive; any
    other output goes to `hooks.log` line by line. Returns the objective and the epoch resumed from.
    """
    write_json(cat.pretrain.launch_spec, {"config": cfg.model_dump(mode="json"), "catalog": cat.to_json()})
    cmd = launch_command(cfg, cat)
    nodes = f" on this node of {cfg.pretrain.nnodes}" if cfg.pretrain.nnodes > 1 else ""
    hooks.log(f"starting {cfg.pretrain.processes} data-parallel processes{nodes}: {' '.join(cmd)}")
    summary: dict = {}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout or []:
            line = line.rstrip()
            if not line.startswith(EVENT):
                if line:
                    hooks.log(line)
                continue
            event = json.loads(line[len(EVENT):])
            if event["kind"] == "epoch":
                hooks.epoch("", event["epoch"], cfg.pretrain.epochs, event["metrics"], event.get("items"))
            elif event["kind"] == "step":
                hooks.step("", event["step"], event["metrics"])
            else:
                summary = event
    if proc.returncode or not summary:
        raise RuntimeError(f"data-parallel pretraining failed (exit {proc.returncode}); its output is in the log above")
    return summary["objective"], int(summary["resumed_from"])
