"""torchrun pretraining: two gloo processes train the stage and rank 0 writes where the stage looks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data import dataset as ds
from mmcore.data.ingest import ingest
from mmcore.data.sources import open_source
from mmcore.training.contrastive import CHECKPOINT_FILE, ENCODER_FILE, load_encoder
from mmcore.training.launch import resume_key
from mmcore.training.vqa_pretrain import pretrain_encoder

pytestmark = pytest.mark.slow


def _processed(root, shapes_raw):
    cfg = load_config("smoke", {"data_root": str(root)})
    cat = Catalog.from_config(cfg)
    report = ingest(open_source(str(shapes_raw), "auto"), cat.processed, cfg.ingest, workers=1)
    tok = ds.fit_tokenizer([s.samples_path for s in report.shards], cfg.ingest.vocab_size,
                           cat.processed / ds.TOKENIZER)
    for shard in report.shards:
        ds.tokenize_shard(shard.samples_path, tok, cfg.encoder.max_text_len)
    ds.build_manifest(cat.processed, report, tok, {})
    return cfg, cat


def test_torchrun_pretraining_is_picked_up_by_the_stage(tmp_path, shapes_raw):
    cfg, cat = _processed(tmp_path, shapes_raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "mmcore.training.launch", "--preset", "smoke", "--set", f"data_root={tmp_path}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert '"world": 2' in out.stdout and '"objective": "contrastive"' in out.stdout
    assert out.stdout.count("epoch ") == cfg.pretrain.epochs  # rank 0 alone reports
    state = torch.load(cat.pretrain / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == cfg.pretrain.epochs and len(state["history"]) == cfg.pretrain.epochs
    encoder = load_encoder(cat.pretrain / ENCODER_FILE)
    assert encoder.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).embedding.shape == (1, 32)
    # The pipeline's stage, in one process, finds the finished run under the same key and does not retrain.
    key = resume_key(ds.read_manifest(cat.processed)["digest"], cfg.digest("ingest", "encoder", "pretrain"))
    train, val = ds.load_samples(cat.processed, ("train",)), ds.load_samples(cat.processed, ("val",))
    vocab = ds.load_tokenizer(cat.processed).vocab_size
    _, _, result = pretrain_encoder(train, val, cfg.encoder, cfg.pretrain, vocab, cat.pretrain, torch.device("cpu"),
                                    resume_key=key)
    assert result.resumed_from == cfg.pretrain.epochs
