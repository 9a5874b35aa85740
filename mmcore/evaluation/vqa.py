"""VQA accuracy of the answer head, beside the majority answer and the blind baselines."""

from __future__ import annotations

import torch

from mmcore.features import FeatureSet
from mmcore.metrics import accuracy, accuracy_by_type, majority_answer
from mmcore.training.heads import Heads, predict_answers, qa_pairs


def evaluate_vqa(heads: Heads, train: FeatureSet, test: FeatureSet, device: torch.device) -> dict[str, float]:
    """Accuracy overall and per question type; baselines: the majority training answer, and the blind
    baselines (`vqa_acc_question_only`, `vqa_acc_image_only`) where they were trained."""
    index = {a: i for i, a in enumerate(heads.answers)}
    pairs = qa_pairs(test, index)
    if not pairs or heads.vqa is None:
        return {}
    idx, questions = [p[0] for p in pairs], [p[1] for p in pairs]
    gold = [qa["answer"] for qas in test.qa for qa in qas]

    def acc(model: torch.nn.Module) -> tuple[float, list[str]]:
        pred = [heads.answers[i] for i in predict_answers(model, test, idx, questions, device).tolist()]
        return accuracy(pred, gold), pred

    out: dict[str, float] = {}
    out["vqa_acc"], pred = acc(heads.vqa)
    majority = majority_answer([qa["answer"] for qas in train.qa for qa in qas])
    out["vqa_acc_baseline"] = accuracy([majority] * len(gold), gold)
    types = [qa["type"] for qas in test.qa for qa in qas]
    out.update({f"vqa_acc_{_slug(t)}": v for t, v in accuracy_by_type(pred, gold, types).items()})
    for sees, model in heads.vqa_blind.items():
        out[f"vqa_acc_{sees}_only"] = acc(model)[0]
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
