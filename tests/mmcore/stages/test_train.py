"""The train stage: every head the data supports, how many epochs each trains, and its inputs."""

from __future__ import annotations

import pytest
import torch

from mmcore.config import HeadsConfig
from mmcore.integrity import CorruptOutput
from mmcore.io import file_sha256
from mmcore.stages import train
from tests.mmcore.stages.corruptkit import truncate
from tests.mmcore.stages.stagekit import copy_run


def test_epochs_per_head():
    cfg = HeadsConfig(epochs=7, vqa_baseline_epochs=3, text_epochs=4)
    assert [train.head_epochs(cfg, n) for n in ("vqa", "caption", "vqa_question_only", "vqa_image_only",
                                                "translation", "generation")] == [7, 7, 3, 3, 4, 4]
    assert train.head_epochs(HeadsConfig(epochs=5), "vqa_image_only") == 5  # baselines default to epochs


def test_the_result_names_the_heads_it_wrote(smoke_stages):
    cfg, cat, run = smoke_stages
    r = run.train
    assert r.outputs == {cat.heads.heads: file_sha256(cat.heads.heads)} == {cat.heads.heads: r.heads_sha256}
    assert r.skipped == {} and r.answers > 1
    state = torch.load(cat.heads.heads, weights_only=True)
    assert len(state["answers"]) == r.answers


def test_the_inputs_follow_the_features_and_the_heads_settings(smoke_stages):
    cfg, cat, _ = smoke_stages
    base = train.inputs(cfg, cat)
    assert base["features"] == cat.features.digest() and base["out"] == str(cat.heads.path.resolve())
    more = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"epochs": 9})})
    assert train.inputs(more, cat)["config"] != base["config"]


def test_corrupt_features_are_one_error_naming_the_file_and_the_extract_stage(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    shard = cat.features.listed()[1]
    truncate(shard)
    with pytest.raises(CorruptOutput, match=rf"^{shard} is corrupt \(sha256 .*\): run the extract stage again "
                                            r"\(--refresh extract\)$"):
        train.run(cfg, cat)
    truncate(cat.features.manifest)
    with pytest.raises(CorruptOutput, match=rf"^{cat.features.manifest} is corrupt \(JSONDecodeError: .*extract\)$"):
        train.run(cfg, cat)
    assert not cat.heads.path.exists() or cat.heads.heads.read_bytes() == smoke_stages[1].heads.heads.read_bytes()
