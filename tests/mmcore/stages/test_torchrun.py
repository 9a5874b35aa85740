"""Data-parallel pretraining under torchrun: two gloo processes, launched by the stage or by hand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mmcore.catalog import Catalog
from mmcore.config import PipelineConfig
from mmcore.io import read_json
from mmcore.stages import pretrain
from mmcore.stages.hooks import Hooks
from mmcore.training.contrastive import load_encoder
from tests.mmcore.stages.stagekit import copy_run

pytestmark = pytest.mark.slow


class Recorder(Hooks):
    def __init__(self) -> None:
        self.epochs: list[tuple[str, int, int, int | None]] = []
        self.lines: list[str] = []

    def epoch(self, part, epoch, epochs, metrics, items=None) -> None:
        self.epochs.append((part, epoch, epochs, items))

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_the_stage_launches_torchrun_with_its_config_and_catalog(smoke_stages, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg, cat = copy_run(smoke_stages, tmp_path / "data", pretrain__processes=2)
    hooks = Recorder()
    result = pretrain.run(cfg, cat, hooks)
    assert (result.processes, result.objective, result.resumed_from) == (2, "contrastive", 0)
    train = smoke_stages[2].ingest.splits["train"]
    assert hooks.epochs == [("", 0, 1, train)]  # rank 0 alone reports, through the launcher
    assert any("starting 2 data-parallel processes" in line for line in hooks.lines)
    spec = read_json(cat.pretrain.launch_spec)  # the config and catalog, resolved once by the stage
    assert PipelineConfig.model_validate(spec["config"]) == cfg and Catalog.from_json(spec["catalog"]) == cat
    state = torch.load(cat.pretrain.checkpoint, weights_only=True)
    assert state["epoch"] == 1 and state["key"] == pretrain.resume_key(cfg, cat)
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    assert load_encoder(cat.pretrain.encoder).encode_image(image).embedding.shape == (1, cfg.encoder.embed_dim)


def test_a_run_started_by_hand_is_picked_up_by_the_stage(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data", pretrain__processes=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "mmcore.stages.torchrun", "--preset", "smoke", "--set", f"data_root={cat.root}",
           "--set", "pretrain.epochs=1", "--set", "pretrain.processes=2"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert '"world": 2' in out.stdout and '"objective": "contrastive"' in out.stdout
    assert out.stdout.count("epoch 1/1") == 1  # rank 0 alone reports
    # The stage, in this one process, finds the finished run under the same key and does not train again.
    objective, fitted = pretrain.train_here(cfg, cat, Hooks())
    assert objective == "contrastive" and fitted.resumed_from == cfg.pretrain.epochs
