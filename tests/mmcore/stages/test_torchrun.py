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


def test_two_nodes_joined_by_a_c10d_rendezvous_train_as_one_node_with_both_processes(smoke_stages, tmp_path,
                                                                                       monkeypatch):
    """Two "nodes" on 127.0.0.1: the pretrain stage started twice with pretrain.nnodes=2 (one process each),
    joined by torchrun's c10d rendezvous; the checkpoint equals one node's with 2 processes (same global batch)."""
    import socket
    import threading

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    single, one = copy_run(smoke_stages, tmp_path / "one", pretrain__processes=2)
    pretrain.run(single, one)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg, two = copy_run(smoke_stages, tmp_path / "two", pretrain__processes=1, pretrain__nnodes=2,
                        pretrain__rdzv_endpoint=f"127.0.0.1:{port}")
    assert "--rdzv-backend=c10d" in pretrain.launch_command(cfg, two)
    results, hooks = {}, [Recorder(), Recorder()]

    def node(i: int) -> None:
        results[i] = pretrain.run(cfg, two, hooks[i])

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1], [h.lines[-5:] for h in hooks]
    assert {r.encoder_sha256 for r in results.values()} == {results[0].encoder_sha256}  # both nodes see one model
    assert sum(bool(h.epochs) for h in hooks) == 1  # global rank 0 alone reports its epochs
    mine = torch.load(two.pretrain.checkpoint, weights_only=True)["model"]
    ref = torch.load(one.pretrain.checkpoint, weights_only=True)["model"]
    assert mine.keys() == ref.keys()
    for name in ref:
        assert torch.allclose(mine[name].float(), ref[name].float(), atol=1e-6), name
