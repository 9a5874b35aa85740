"""VQA evaluation treats the head and its blind baselines alike: each is a model that answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmcore.evaluation import evaluate_vqa, vqa_metrics_and_results
from mmcore.features import FeatureSet
from mmcore.models.builders import HeadDims
from mmcore.models.heads import BlindVQA
from mmcore.training.heads import Heads

ANSWERS = ["red", "blue", "yes"]
COLOUR_Q, SHAPE_Q = [2, 5, 3], [2, 7, 3]  # "what colour is it?", "is it a shape?"
CPU = torch.device("cpu")
DIMS = HeadDims(vocab_size=10, grid_dim=2, pooled_dim=2, cells=1, hidden=8, word_dim=8)


class Oracle(nn.Module):
    """Answers "yes" to the shape question (token 7 second) and reads the colour off pooled[:, 0]."""

    def forward(self, grid, pooled, question_ids, owner=None):
        colour = torch.where(pooled[:, 0] > 0, 0, 1)  # red if positive, blue otherwise (zeros: blue)
        answer = torch.where(question_ids[:, 1] == 7, 2, colour)
        return nn.functional.one_hot(answer, len(ANSWERS)).float()  # (Q, A)


def _features(red: list[bool]) -> FeatureSet:
    n = len(red)
    pooled = np.array([[1.0 if r else -1.0, 0.0] for r in red], np.float32)
    qa = [[{"question": "what colour is it?", "answer": "red" if r else "blue", "type": "color"},
           {"question": "is it a shape?", "answer": "yes", "type": "yes/no"}] for r in red]
    return FeatureSet([str(i) for i in range(n)], np.zeros((n, 4), np.float32), pooled,
                      np.zeros((n, 2, 1), np.float32), [np.zeros((0, 4), np.float32)] * n, [[]] * n, [[]] * n, qa,
                      [[COLOUR_Q, SHAPE_Q]] * n)


def test_head_and_blind_baselines_are_scored_by_what_they_see():
    data = _features([True, True, False, True])
    heads = Heads(Oracle(), ANSWERS, None, "en", DIMS,
                  {"question": BlindVQA(Oracle(), "question"), "image": BlindVQA(Oracle(), "image")})
    metrics = evaluate_vqa(heads, data, data, CPU)
    assert metrics == {
        "vqa_acc": 1.0,
        "vqa_acc_baseline": 0.5,  # the majority training answer, "yes"
        "vqa_acc_color": 1.0,
        "vqa_acc_yes_no": 1.0,
        # zero image features read as blue: the blue image's colour and every "yes" are right
        "vqa_acc_question_only": pytest.approx(5 / 8),
        # every question reads as empty ([BOS] [EOS]), so as a colour question: the colours are right
        "vqa_acc_image_only": 0.5,
    }


def test_no_vqa_head_or_no_questions_gives_no_metrics():
    data = _features([True, False])
    assert evaluate_vqa(Heads(None, ANSWERS, None, "en", DIMS), data, data, CPU) == {}
    no_questions = _features([])
    assert evaluate_vqa(Heads(Oracle(), ANSWERS, None, "en", DIMS), data, no_questions, CPU) == {}


def test_answers_are_the_official_results_file_where_every_question_has_an_id():
    heads = Heads(Oracle(), ANSWERS, None, "en", DIMS)
    data = _features([True, False])
    assert vqa_metrics_and_results(heads, data, data, CPU)[1] == []  # the synthetic questions have no ids
    ids = iter(["458752000", "458752001", "-3", "q-7"])  # VQA v2's ids are integers; others stay as given
    for row in data.qa:
        for qa in row:
            qa["question_id"] = next(ids)
    metrics, results = vqa_metrics_and_results(heads, data, data, CPU)
    assert metrics == evaluate_vqa(heads, data, data, CPU)
    assert results == [{"question_id": 458752000, "answer": "red"}, {"question_id": 458752001, "answer": "yes"},
                       {"question_id": -3, "answer": "blue"}, {"question_id": "q-7", "answer": "yes"}]
    data.qa[1][1]["question_id"] = None
    assert vqa_metrics_and_results(heads, data, data, CPU)[1] == []
