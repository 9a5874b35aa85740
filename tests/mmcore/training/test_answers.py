"""Answer classes and soft-score targets, as the heads stage and VQA pretraining use them."""

from __future__ import annotations

from collections import Counter

import pytest

from mmcore.training.answers import answer_vocabulary, dense_scores, soft_targets
from tests.mmcore.training.test_heads import _features, _ten_answers


def test_the_answer_vocabulary_counts_every_human_answer():
    single = _features(30, 0).qa
    assert answer_vocabulary(single) == [a for a, _ in Counter(q["answer"] for r in single for q in r).most_common()]
    qa = [[{"answer": "red", "answers": ["red"] * 6 + ["orange"] * 3 + ["a red"]},
           {"answer": "yes", "answers": ["yes"] * 9 + ["no"]}] for _ in range(3)]
    # own answers always; other human answers given 9 times or more: "orange" (9), not "no" (3) or "a red" (3)
    assert answer_vocabulary(qa) == ["yes", "red", "orange"]
    assert answer_vocabulary(qa, min_count=1) == ["yes", "red", "orange", "a red", "no"]


def test_soft_targets_are_the_official_accuracy_of_each_answer():
    single = _features(4, 0)
    assert soft_targets(single.qa, ["yes", "red", "blue"]) is None  # one answer per question: cross-entropy
    data = _ten_answers(_features(4, 0))
    answers = ["yes", "red", "blue", "orange", "navy", "no"]
    targets = soft_targets(data.qa, answers)
    colour = data.qa[0][0]["answer"]
    # 7 humans say the colour once "a red" is normalised, 3 the other: min(1, 0.3 k)
    assert targets[0] == pytest.approx({answers.index(colour): 1.0,
                                        answers.index("orange" if colour == "red" else "navy"): 0.9})
    assert targets[1] == pytest.approx({0: 1.0, 5: 0.3})
    assert len(targets) == 8
    dense = dense_scores(targets[:2], len(answers))
    assert dense.shape == (2, 6) and dense[1].tolist() == pytest.approx([1.0, 0, 0, 0, 0, 0.3])
