from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmcore.catalog import BundleDir
from mmcore.config import HeadsConfig
from mmcore.evaluation import evaluate_vqa
from mmcore.features import FeatureSet
from mmcore.integrity import CorruptOutput
from mmcore.models.builders import (
    HeadDims,
    build_blind_vqa,
    build_captioner,
    build_generator,
    build_translator,
    build_vqa,
)
from mmcore.models.heads import BlindVQA
from mmcore.training.heads import (
    Heads,
    load_heads,
    save_heads,
    train_heads,
)
from mmcore.training.loop import pad_batch
from tests.mmcore.stages.corruptkit import truncate

COLOUR_Q, SHAPE_Q = [2, 5, 6, 3], [2, 7, 8, 3]  # "what colour is it?", "is it a shape?"
CFG = HeadsConfig(epochs=6, batch_size=32, lr=5e-3, hidden=32, word_dim=16, device="cpu")


def _features(n: int, seed: int) -> FeatureSet:
    """Two questions per image: one only the image answers (its colour), one always answered "yes"."""
    rng = np.random.default_rng(seed)
    red = rng.random(n) < 0.5
    # The colour is a pattern across channels (a constant shift would vanish in the heads' LayerNorm).
    sign = np.where(red, 1.0, -1.0).astype(np.float32)[:, None] * np.array([1, -1, 1, -1, 1, -1], np.float32)
    grid = (sign[:, :4, None] + 0.3 * rng.standard_normal((n, 4, 4))).astype(np.float32)  # (N, G, cells)
    pooled = (sign + 0.3 * rng.standard_normal((n, 6))).astype(np.float32)
    qa = [[{"question": "what colour is it?", "answer": "red" if r else "blue", "type": "color"},
           {"question": "is it a shape?", "answer": "yes", "type": "yes/no"}] for r in red]
    return FeatureSet([str(i) for i in range(n)], np.zeros((n, 4), np.float32), pooled, grid,
                      [np.zeros((0, 4), np.float32)] * n, [[]] * n, [[]] * n, qa, [[COLOUR_Q, SHAPE_Q]] * n)


def test_vqa_head_beats_its_blind_baselines_and_they_survive_a_reload(tmp_path):
    train, val, test = _features(160, 0), _features(40, 1), _features(80, 2)
    heads, skipped = train_heads(train, val, CFG, vocab_size=10, device=torch.device("cpu"))
    assert skipped == {"caption": "the training split has no captions in heads.caption_lang='en'",
                       "translation": "no parallel captions in two languages (the training split has [])",
                       "generation": "the training split has no captions"}
    assert set(heads.vqa_blind) == {"question", "image"}
    metrics = evaluate_vqa(heads, train, test, torch.device("cpu"))
    assert metrics["vqa_acc"] >= 0.95
    # The question alone gets the "yes" half right and guesses colours; the image alone cannot tell which
    # question was asked, so it gets about half.
    assert 0.6 <= metrics["vqa_acc_question_only"] <= 0.85
    assert metrics["vqa_acc_image_only"] <= 0.8
    save_heads(heads, tmp_path / "heads.pt")
    again = evaluate_vqa(load_heads(tmp_path / "heads.pt"), train, test, torch.device("cpu"))
    assert again == metrics


def test_blind_baselines_can_be_turned_off():
    heads, _ = train_heads(_features(40, 0), _features(10, 1), CFG.model_copy(update={"epochs": 1,
                                                                                      "vqa_baselines": False}),
                           vocab_size=10, device=torch.device("cpu"))
    assert heads.vqa is not None and heads.vqa_blind == {}


def test_blind_baselines_take_their_own_epochs():
    seen: dict[str, int] = {}

    def counter(name: str):
        return lambda epoch, metrics: seen.__setitem__(name, epoch + 1)

    cfg = CFG.model_copy(update={"epochs": 2, "vqa_baseline_epochs": 1})
    train_heads(_features(20, 0), _features(10, 1), cfg, vocab_size=10, device=torch.device("cpu"), on_epoch=counter)
    assert seen == {"vqa": 2, "vqa_question_only": 1, "vqa_image_only": 1}


def _ten_answers(data: FeatureSet) -> FeatureSet:
    """`data` as VQA v2 would give it: ten humans per question, who do not all agree."""
    for row in data.qa:
        colour, other = (row[0]["answer"], "orange") if row[0]["answer"] == "red" else (row[0]["answer"], "navy")
        row[0].update(answers=[colour] * 6 + [other] * 3 + ["a " + colour], answer_type="other",
                      question_type="what colour is")
        row[1].update(answers=["yes"] * 9 + ["no"], answer_type="yes/no", question_type="is it")
    return data


def test_vqa_head_trains_on_soft_scores_where_questions_have_ten_answers(monkeypatch):
    import mmcore.training.heads as heads_module

    used = []
    monkeypatch.setattr(heads_module, "classification_loss", lambda *a: used.append("ce"))
    train, val, test = _ten_answers(_features(160, 0)), _ten_answers(_features(40, 1)), _ten_answers(_features(80, 2))
    epochs: list[dict] = []
    model, answers = heads_module.train_vqa(train, val, CFG, 10, torch.device("cpu"),
                                            lambda epoch, m: epochs.append(m))
    assert used == [] and answers[:3] == ["yes", "blue", "red"] and set(answers) >= {"orange", "navy"}
    assert epochs[-1]["val_vqa_acc"] >= 0.95  # the official accuracy of the val answers
    metrics = evaluate_vqa(Heads(model, answers, None, "en", HeadDims(10, 4, 6, 4, 32, 16)), train, test,
                           torch.device("cpu"))
    assert metrics["vqa_acc"] >= 0.95
    assert {k for k in metrics if k.startswith(("vqa_acc_at_", "vqa_acc_qt_"))} == {
        "vqa_acc_at_other", "vqa_acc_at_yes_no", "vqa_acc_qt_what_colour_is", "vqa_acc_qt_is_it"}
    assert metrics["vqa_acc_baseline"] == pytest.approx(0.5)  # "yes": 1 on the yes/no half, 0 on the colours


def test_vqa_training_repeats_bit_for_bit_with_repeated_questions():
    """Many images share a question: the encoded questions are gathered by index, and the gradients of
    the copies must add up in a fixed order (indexing's backward adds them in thread order on CPU)."""
    from mmcore.training.heads import train_vqa

    rng = np.random.default_rng(0)
    questions = [[2, *rng.integers(4, 60, size=int(rng.integers(3, 9))).tolist(), 3] for _ in range(12)]
    data = _features(600, 0)
    data.question_ids = [[questions[int(rng.integers(12))] for _ in range(2)] for _ in range(600)]
    cfg = CFG.model_copy(update={"epochs": 2, "batch_size": 128, "hidden": 256, "word_dim": 128})
    a, _ = train_vqa(data, _features(20, 1), cfg, 60, torch.device("cpu"))
    b, _ = train_vqa(data, _features(20, 1), cfg, 60, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("film", [True, False])  # heads.film, and heads saved before it (no FiLM layers)
def test_saved_heads_reload_with_typed_dims_and_the_same_outputs(tmp_path, film):
    torch.manual_seed(0)
    dims = HeadDims(vocab_size=20, grid_dim=6, pooled_dim=5, cells=4, hidden=16, word_dim=8)
    heads = Heads(build_vqa(dims, 3, film=film), ["red", "blue", "yes"], build_captioner(dims), "en", dims,
                  {s: build_blind_vqa(dims, 3, s, film) for s in ("question", "image")}, build_translator(dims, 2),
                  build_generator(dims, 2), ["en", "zh"])
    save_heads(heads, tmp_path / "heads.pt")
    raw = torch.load(tmp_path / "heads.pt", weights_only=True)
    assert raw["dims"] == {"vocab_size": 20, "grid_dim": 6, "pooled_dim": 5, "cells": 4, "hidden": 16, "word_dim": 8}
    again = load_heads(tmp_path / "heads.pt")
    assert again.dims == dims and isinstance(again.dims, HeadDims)
    assert (again.answers, again.caption_lang, again.text_langs) == (heads.answers, "en", ["en", "zh"])
    assert {s: (type(m), m.sees) for s, m in again.vqa_blind.items()} == {"question": (BlindVQA, "question"),
                                                                        "image": (BlindVQA, "image")}
    assert (again.vqa.film is not None) == film
    assert all((m.head.film is not None) == film for m in again.vqa_blind.values())

    g = torch.Generator().manual_seed(1)
    grid, pooled = torch.randn(2, 6, 4, generator=g), torch.randn(2, 5, generator=g)
    q, lang = pad_batch([[2, 5, 6, 3], [2, 7, 3]]), torch.tensor([0, 1])
    with torch.no_grad():
        for name in ("vqa", "captioner", "translator", "generator"):
            old, new = getattr(heads, name).eval(), getattr(again, name)
            args = {"vqa": (grid, pooled, q), "captioner": (grid, pooled, q), "translator": (q, lang, q),
                    "generator": (lang, q)}[name]
            assert torch.equal(old(*args), new(*args)), name
        for s, m in heads.vqa_blind.items():
            assert torch.equal(m.eval()(grid, pooled, q), again.vqa_blind[s](grid, pooled, q)), s


def test_corrupt_heads_are_one_line_naming_them_and_the_stage_to_run_again(tiny_bundle, tmp_path):
    path = tmp_path / "heads.pt"
    shutil.copyfile(BundleDir(tiny_bundle).heads, path)
    assert load_heads(path).answers == ["red", "blue", "2"]
    truncate(path)
    with pytest.raises(CorruptOutput) as err:
        load_heads(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path} is corrupt (torch.load fails on ")
    assert str(err.value).endswith(": run the train stage again (--refresh train)")
