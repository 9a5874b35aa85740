"""The train stage: every head the data supports, how many epochs each trains, and its inputs."""

from __future__ import annotations

import torch

from mmcore.config import HeadsConfig
from mmcore.io import file_sha256
from mmcore.stages import train


def test_epochs_per_head():
    cfg = HeadsConfig(epochs=7, vqa_baseline_epochs=3, text_epochs=4)
    assert [train.head_epochs(cfg, n) for n in ("vqa", "caption", "vqa_question_only", "vqa_image_only",
                                                "translation", "generation")] == [7, 7, 3, 3, 4, 4]
    assert train.head_epochs(HeadsConfig(epochs=5), "vqa_image_only") == 5  # baselines default to epochs


def test_the_result_names_the_heads_it_wrote(smoke_stages):
    cfg, cat, run = smoke_stages
    r = run.train
    assert r.outputs == [cat.heads.heads] and r.heads_sha256 == file_sha256(cat.heads.heads)
    assert r.skipped == {} and r.answers > 1
    state = torch.load(cat.heads.heads, weights_only=True)
    assert len(state["answers"]) == r.answers


def test_the_inputs_follow_the_features_and_the_heads_settings(smoke_stages):
    cfg, cat, _ = smoke_stages
    base = train.inputs(cfg, cat)
    assert base["features"] == cat.features.digest() and base["out"] == str(cat.heads.path.resolve())
    more = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"epochs": 9})})
    assert train.inputs(more, cat)["config"] != base["config"]
