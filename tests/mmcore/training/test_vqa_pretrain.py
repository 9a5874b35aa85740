from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore.catalog import PretrainDir
from mmcore.config import EncoderConfig, PretrainConfig
from mmcore.data.dataset import SampleSet
from mmcore.training.contrastive import load_encoder
from mmcore.training.vqa_pretrain import pretrain_vqa, resolve_objective
from tests.mmcore.training.colourkit import colour_set

ENC = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=16, embed_dim=8, grid=2, multiscale=False)


def test_auto_objective_follows_the_data():
    qa_only = colour_set(4, 0, "train")
    assert resolve_objective("auto", qa_only) == "vqa"
    with_captions = SampleSet(qa_only.sample_ids, qa_only.splits, qa_only.images, [[{"lang": "en", "text": "x"}]] * 4,
                              [[[2, 4, 3]]] * 4, qa_only.qa, qa_only.question_ids)
    assert resolve_objective("auto", with_captions) == "contrastive"
    assert resolve_objective("vqa", with_captions) == "vqa"
    empty = SampleSet(["a"], ["train"], qa_only.images[:1], [[]], [[]], [[]], [[]])
    with pytest.raises(ValueError, match="neither captions nor questions"):
        resolve_objective("auto", empty)
    with pytest.raises(ValueError, match="choose auto"):
        resolve_objective("mlm", qa_only)


def test_the_image_encoder_learns_what_only_the_image_answers(tmp_path):
    cfg = PretrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu")
    model, result = pretrain_vqa(colour_set(96, 1, "train"), colour_set(32, 2, "val"), ENC, cfg, vocab_size=10,
                                 out=PretrainDir(tmp_path), device=torch.device("cpu"), resume_key="k")
    # The question never varies, so a blind model is at chance (~0.5): the encoder must see the colour.
    assert result.history[-1]["val_vqa_acc"] >= 0.9
    loaded = load_encoder(PretrainDir(tmp_path).encoder)  # an ordinary dual encoder checkpoint
    x = torch.from_numpy(colour_set(2, 3, "x").images)
    assert torch.allclose(loaded.encode_image(x).pooled, model.eval().encode_image(x).pooled, atol=1e-5)
    _, again = pretrain_vqa(colour_set(96, 1, "train"), colour_set(32, 2, "val"), ENC, cfg, 10, PretrainDir(tmp_path),
                            torch.device("cpu"), resume_key="k")
    assert again.resumed_from == 3  # the finished run's checkpoint is continued, not redone


def _ten_answers(data: SampleSet) -> SampleSet:
    """`data` as VQA v2 would give it: ten humans per question, seven of them right, three saying a near colour."""
    for row in data.qa:
        near = "orange" if row[0]["answer"] == "red" else "navy"
        row[0].update(answers=[row[0]["answer"]] * 7 + [near] * 3, answer_type="other")
    return data


def test_ten_human_answers_train_on_soft_scores(tmp_path, monkeypatch):
    import mmcore.training.vqa_pretrain as module

    used: list[str] = []
    soft = module.soft_score_loss
    monkeypatch.setattr(module, "classification_loss", lambda *a: used.append("cross-entropy"))
    monkeypatch.setattr(module, "soft_score_loss", lambda *a: used.append("soft") or soft(*a))
    cfg = PretrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu")
    _, result = pretrain_vqa(_ten_answers(colour_set(96, 1, "train")), _ten_answers(colour_set(32, 2, "val")), ENC,
                             cfg, vocab_size=10, out=PretrainDir(tmp_path), device=torch.device("cpu"))
    assert used and set(used) == {"soft"}
    # the official accuracy: 1.0 for the colour seven humans gave, 0.9 for the near one, 0 otherwise
    assert result.history[-1]["val_vqa_acc"] >= 0.9
    assert result.history[-1]["train_accuracy"] <= 1.0


def test_no_questions_is_a_clear_error(tmp_path):
    empty = SampleSet(["a", "b"], ["train"] * 2, np.zeros((2, 3, 32, 32), np.uint8), [[]] * 2, [[]] * 2, [[]] * 2,
                      [[]] * 2)
    with pytest.raises(ValueError, match="needs questions"):
        pretrain_vqa(empty, empty, ENC, PretrainConfig(epochs=1, device="cpu"), 10, PretrainDir(tmp_path),
                     torch.device("cpu"))
