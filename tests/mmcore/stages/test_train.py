"""The train stage: every head the data supports, how many epochs each trains, and its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore.config import HeadsConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.features import DiskRows, load_features
from mmcore.integrity import CorruptOutput
from mmcore.io import file_sha256
from mmcore.stages import train
from mmcore.training.heads import save_heads, train_heads
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


def test_heads_from_spilled_features_equal_heads_trained_in_memory(smoke_stages, tmp_path):
    """The train stage spills the image vectors to disk (DiskRows); the heads see the same rows in the same
    order, so they come out bit for bit as from features held in memory. Texts load the same either way."""
    cfg, cat, _ = smoke_stages
    load = lambda split, spill: load_features(cat.features, cat.processed, (split,), spill)  # noqa: E731
    memory, disk = load("train", None), load("train", tmp_path / "train")
    assert isinstance(disk.grid, DiskRows) and disk.grid.shape == memory.grid.shape
    assert (disk.sample_ids, disk.qa, disk.caption_ids) == (memory.sample_ids, memory.qa, memory.caption_ids)
    rows = np.random.default_rng(0).integers(0, len(memory), 50).tolist() + [3, 4, 5, 5, 0]  # runs, repeats
    for name in ("grid", "pooled", "image_embedding"):
        np.testing.assert_array_equal(getattr(disk, name)[rows], getattr(memory, name)[rows])
    with pytest.raises(IndexError, match=f"rows 0..{len(memory)} of {len(memory)}"):
        disk.grid[[0, len(memory)]]
    vocab = load_tokenizer(cat.processed).vocab_size
    heads = [train_heads(t, load("val", s), cfg.heads, vocab, torch.device("cpu"))[0]
             for t, s in ((memory, None), (disk, tmp_path / "val"))]
    states = [torch.load(save_heads(h, tmp_path / f"heads{i}.pt"), weights_only=True) for i, h in enumerate(heads)]
    flat = [{f"{k}.{n}": t for k, v in s.items() if isinstance(v, dict) for n, t in v.items()
             if isinstance(t, torch.Tensor)} for s in states]
    assert flat[0].keys() == flat[1].keys() and len(flat[0]) > 10
    assert all(torch.equal(flat[0][k], flat[1][k]) for k in flat[0])
    assert not list(cat.heads.path.glob(f"{train.SCRATCH}*"))  # the stage removed its own scratch folder
