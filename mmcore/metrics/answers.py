"""Answer accuracy (VQA): overall, per question type, and the majority answer it is read against."""

from __future__ import annotations

from collections import Counter

import numpy as np


def accuracy(pred: list[str], gold: list[str]) -> float:
    if len(pred) != len(gold) or not gold:
        raise ValueError(f"need equal, non-empty prediction and gold lists, got {len(pred)} and {len(gold)}")
    return float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))


def majority_answer(train_answers: list[str]) -> str:
    if not train_answers:
        raise ValueError("no training answers to take the majority of")
    return Counter(train_answers).most_common(1)[0][0]


def accuracy_by_type(pred: list[str], gold: list[str], types: list[str]) -> dict[str, float]:
    out = {}
    for t in sorted(set(types)):
        idx = [i for i, x in enumerate(types) if x == t]
        out[t] = accuracy([pred[i] for i in idx], [gold[i] for i in idx])
    return out
