"""The pretrain stage: a finished run is resumed, not redone; `fresh` starts again; the inputs that key it."""

from __future__ import annotations

import pytest
import torch

from mmcore.integrity import CorruptOutputWarning
from mmcore.io import file_sha256
from mmcore.stages import pretrain
from mmcore.stages.hooks import Hooks
from tests.mmcore.stages.corruptkit import Lines, truncate
from tests.mmcore.stages.stagekit import copy_run


class Recorder(Hooks):
    def __init__(self) -> None:
        self.epochs: list[tuple[str, int, int, int | None]] = []

    def epoch(self, part, epoch, epochs, metrics, items=None) -> None:
        self.epochs.append((part, epoch, epochs, items))


def test_the_result_describes_the_encoder_it_wrote(smoke_stages):
    cfg, cat, run = smoke_stages
    r = run.pretrain
    assert r.outputs == {cat.pretrain.encoder: file_sha256(cat.pretrain.encoder),
                         cat.pretrain.checkpoint: file_sha256(cat.pretrain.checkpoint)}
    assert r.encoder_sha256 == file_sha256(cat.pretrain.encoder)
    assert (r.objective, r.processes, r.resumed_from) == ("contrastive", 1, 0)
    assert r.train_samples == run.ingest.splits["train"] and r.val_samples == run.ingest.splits.get("val", 0)
    history = torch.load(cat.pretrain.checkpoint, weights_only=True)["history"]
    assert r.final == history[-1] and "train_loss" in r.final


def test_a_finished_run_is_resumed_and_fresh_trains_again_to_the_same_weights(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    hooks = Recorder()
    resumed = pretrain.run(cfg, cat, hooks)
    assert resumed.resumed_from == cfg.pretrain.epochs and hooks.epochs == []  # nothing left to train
    again = pretrain.run(cfg, cat, hooks, fresh=True)
    assert again.resumed_from == 0 and again.encoder_sha256 == smoke_stages[2].pretrain.encoder_sha256
    assert hooks.epochs == [("", 0, 1, smoke_stages[2].ingest.splits["train"])]


def test_the_inputs_change_with_the_data_and_the_encoder_settings_only(smoke_stages, tmp_path):
    cfg, cat, _ = smoke_stages
    base = pretrain.inputs(cfg, cat)
    assert base["dataset"] == cat.processed.digest() and base["out"] == str(cat.pretrain.path.resolve())
    _, heads_cat = copy_run(smoke_stages, tmp_path / "a", heads__epochs=5)
    heads_cfg = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"epochs": 5})})
    assert pretrain.inputs(heads_cfg, heads_cat)["config"] == base["config"]
    enc_cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"embed_dim": 16})})
    assert pretrain.inputs(enc_cfg, cat)["config"] != base["config"]
    assert pretrain.resume_key(cfg, cat) == f"{cat.processed.digest()}:{base['config']}"


def test_a_truncated_checkpoint_is_discarded_with_a_warning_and_the_run_starts_over(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    good = {path: path.read_bytes() for path in smoke_stages[2].pretrain.outputs}
    truncate(cat.pretrain.checkpoint)
    hooks = Lines()
    with pytest.warns(CorruptOutputWarning, match=rf"{cat.pretrain.checkpoint} is corrupt \(torch.load fails on "):
        result = pretrain.run(cfg, cat, hooks)
    assert len(hooks.warnings()) == 1 and hooks.warnings()[0].endswith("): training from scratch")
    assert result.resumed_from == 0  # trained again, from the same seed: the same files, byte for byte
    assert [path.read_bytes() for path in result.outputs] == list(good.values())
    assert list(result.outputs.values()) == list(smoke_stages[2].pretrain.outputs.values())


def test_a_truncated_encoder_is_written_again_from_the_checkpoint_it_was_made_from(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    good = cat.pretrain.encoder.read_bytes()
    truncate(cat.pretrain.encoder)
    result = pretrain.run(cfg, cat)  # the stage writes the encoder, never reads it
    assert result.resumed_from == cfg.pretrain.epochs and cat.pretrain.encoder.read_bytes() == good
