"""bench/pretrained.py checks the weights before any work: without them it stops with one line saying where to put
them (nothing is generated or trained)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

from bench.pretrained import table


def test_missing_weights_stop_the_benchmark_with_one_line(tmp_path: Path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    run = subprocess.run([sys.executable, "-m", "bench.pretrained", "--weights", "IMAGENET1K_V1", "--root",
                          str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: encoder.weights 'IMAGENET1K_V1'")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in run.stderr
    assert not (tmp_path / "data").exists()


def test_weights_of_another_digest_are_refused(tmp_path: Path):
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    run = subprocess.run([sys.executable, "-m", "bench.pretrained", "--weights", str(weights), "--weights-sha256",
                          "0" * 8, "--root", str(tmp_path / "data")], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 1 and "expected 00000000" in run.stderr and run.stderr.count("\n") == 1


def test_the_table_puts_both_runs_beside_the_baseline():
    scratch = {"t2i_r1": 0.25, "t2i_r1_baseline": 0.1, "caption_cider_d": 0.5, "caption_cider_d_baseline": 0.2}
    pretrained = {"t2i_r1": 0.5, "t2i_r1_baseline": 0.1, "caption_cider_d": 0.75, "caption_cider_d_baseline": 0.2}
    text = table({"runs": {"scratch": {"metrics": scratch}, "pretrained": {"metrics": pretrained}}})
    assert "| t2i_r1 | 0.2500 | 0.5000 | 0.1000 |" in text
    assert "| caption_cider_d | 0.5000 | 0.7500 | 0.2000 |" in text
