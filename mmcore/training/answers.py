"""Answer classes and training targets for VQA, shared by the heads stage and VQA pretraining.

A question with one answer (easy-VQA, the synthetic scenes) trains with cross-entropy on its answer's class. Where
questions have several human answers (VQA v2: ten), every question trains on soft scores: each answer class
scores the official VQA accuracy of giving that answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmcore.vqa_eval import AnswerScorer, human_answers

QA = Sequence[Sequence[Mapping[str, Any]]]  # per sample: its questions, {"question", "answer", ...}
# A human answer that is no question's own answer becomes a class when given this often in the training split:
# bottom-up-top-down's threshold (VQA v2 has ~200k distinct human answers, most given once).
MIN_HUMAN_ANSWERS = 9


def answer_vocabulary(qa: QA, min_count: int = MIN_HUMAN_ANSWERS) -> list[str]:
    """The answer classes, most frequent first (ties: first seen). A question with several human answers (VQA
    v2: ten) counts each of them, any other its one answer. Every question's own answer (VQA v2: the majority
    answer) is a class, any other human answer one given at least `min_count` times; for single-answer data
    that is every answer, by frequency (as before answers were kept)."""
    counts: Counter[str] = Counter()
    own: dict[str, None] = {}
    for row in qa:
        for q in row:
            humans = q.get("answers") or []
            counts.update(humans if len(humans) > 1 else [q["answer"]])
            own[q["answer"]] = None
    counts.update(dict.fromkeys(own, 0))  # an own answer no human gave (data that says so) is still a class
    return [a for a, c in counts.most_common() if c >= min_count or a in own]


def soft_targets(qa: QA, answers: list[str]) -> list[dict[int, float]] | None:
    """Per question (samples in order, then their questions): answer class -> the official VQA accuracy of
    answering it, the soft score a classifier trains on where questions have several human answers; for ten
    answers, a class given by k humans scores min(1, 0.3 k) (not min(1, k / 3): that would overrate answers of
    1-3 humans against the metric). None when every question has one answer: those train with cross-entropy."""
    if not several_answers(qa):
        return None
    scorer = AnswerScorer(answers)
    return [scorer.scores(human_answers(q)) for row in qa for q in row]


def several_answers(qa: QA) -> bool:
    """Whether any question has several human answers (VQA v2): then every question trains on soft scores."""
    return any(len(q.get("answers") or []) > 1 for row in qa for q in row)


def dense_scores(targets: Sequence[Mapping[int, float]], n_answers: int) -> torch.Tensor:
    """Sparse soft targets -> (B, A) float."""
    out = torch.zeros(len(targets), n_answers)
    rows = [r for r, t in enumerate(targets) for _ in t]
    if rows:
        out[rows, [c for t in targets for c in t]] = torch.tensor([v for t in targets for v in t.values()])
    return out
