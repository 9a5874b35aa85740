from __future__ import annotations

import pytest
import torch

from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig, load_config
from mmcore.data.dataset import SampleSet
from mmcore.training.contrastive import load_encoder
from mmcore.training.joint import _may_flip, pretrain_joint
from mmcore.training.vqa_pretrain import pretrain_encoder, resolve_objective
from tests.mmcore.training.colourkit import colour_set

ENC = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=16, embed_dim=8, grid=2, multiscale=False)
CPU = torch.device("cpu")


def _scenes(n: int, seed: int, split: str) -> SampleSet:
    return colour_set(n, seed, split, noise=80, captioned=True)


def test_both_losses_train_one_encoder_and_are_logged_by_name(tmp_path):
    cfg = PretrainConfig(objective="joint", vqa_weight=0.5, epochs=3, batch_size=16, lr=3e-3, device="cpu")
    train, val = _scenes(96, 1, "train"), _scenes(32, 2, "val")
    objective, model, result = pretrain_encoder(train, val, ENC, cfg, 10 + 96, PretrainDir(tmp_path), CPU,
                                                resume_key="k")
    assert objective == "joint"
    last = result.history[-1]
    # the captions never say the colour: only the VQA term can teach the encoder to see it
    assert last["val_vqa_acc"] >= 0.9
    assert {"val_t2i_r1", "val_i2t_r1", "train_i2t_loss", "train_t2i_loss", "train_temperature"} <= last.keys()
    for epoch in result.history:  # each step's loss is the weighted sum, so each epoch's mean is too
        assert epoch["train_loss"] == pytest.approx(epoch["train_contrastive_loss"] + 0.5 * epoch["train_vqa_loss"],
                                                    rel=1e-4)
    loaded = load_encoder(PretrainDir(tmp_path).encoder)  # an ordinary dual encoder checkpoint
    x, ids = torch.from_numpy(_scenes(2, 3, "x").images), torch.tensor([[2, 11, 3]])
    assert torch.allclose(loaded.encode_image(x).embedding, model.eval().encode_image(x).embedding, atol=1e-5)
    assert torch.allclose(loaded.encode_text(ids), model.encode_text(ids), atol=1e-5)
    _, again = pretrain_joint(train, val, ENC, cfg, 10 + 96, PretrainDir(tmp_path), CPU, resume_key="k")
    assert again.resumed_from == 3  # the finished run's checkpoint is continued, not redone


def test_the_text_tower_trains_in_joint_pretraining_and_not_in_vqa_pretraining(tmp_path):
    train, val = _scenes(32, 1, "train"), _scenes(16, 2, "val")
    texts = {}
    for objective in ("joint", "vqa"):
        cfg = PretrainConfig(objective=objective, epochs=1, batch_size=16, lr=3e-3, device="cpu")
        _, model, _ = pretrain_encoder(train, val, ENC, cfg, 10 + 32, PretrainDir(tmp_path / objective), CPU)
        texts[objective] = model.text_proj.weight.detach().clone()
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.training.loop import seed_everything

    seed_everything(0)
    untrained = build_dual_encoder(ENC, 10 + 32).text_proj.weight
    assert torch.equal(texts["vqa"], untrained)
    assert not torch.allclose(texts["joint"], untrained)


def test_joint_needs_captions_and_questions_and_memory():
    with_questions = _scenes(4, 0, "train")
    no_captions = SampleSet(with_questions.sample_ids, with_questions.splits, with_questions.images, [[]] * 4,
                            [[]] * 4, with_questions.qa, with_questions.question_ids)
    assert resolve_objective("joint", with_questions) == "joint"
    with pytest.raises(ValueError, match="joint needs training samples with captions and with questions"):
        resolve_objective("joint", no_captions)
    with pytest.raises(ValueError, match="objective=joint needs pretrain.data=memory"):
        load_config("smoke", {"pretrain.objective": "joint", "pretrain.data": "stream", "pretrain.hard_negatives": 0})


def test_a_sample_whose_questions_name_a_side_is_never_flipped():
    data = _scenes(3, 0, "train")
    data.qa[1][0]["question"] = "what is on the left?"
    data.qa[2][0]["answer"] = "right"
    assert _may_flip(data).tolist() == [True, False, False]
