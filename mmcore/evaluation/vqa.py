"""VQA accuracy of the answer head, beside the majority answer and the blind baselines.

Every accuracy is the official VQA one (`mmcore.vqa_eval`: agreement with the ten human answers, as fractions
0-1, unrounded); a question with one answer (easy-VQA, the synthetic shapes) scores exact match.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from mmcore.features import FeatureSet
from mmcore.metrics import majority_answer
from mmcore.training.heads import Heads, predict_answers, qa_pairs
from mmcore.vqa_eval import VQAAccuracy, group_means, human_answers, vqa_accuracy


def evaluate_vqa(heads: Heads, train: FeatureSet, test: FeatureSet, device: torch.device) -> dict[str, float]:
    """The metrics of `vqa_metrics_and_results`."""
    return vqa_metrics_and_results(heads, train, test, device)[0]


def vqa_metrics_and_results(heads: Heads, train: FeatureSet, test: FeatureSet,
                            device: torch.device) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Accuracy overall (`vqa_acc`) and per question `type` (`vqa_acc_<type>`, unless it is the answer type);
    where the data has them, per VQA answer type (`vqa_acc_at_<yes_no|number|other>`) and question type
    (`vqa_acc_qt_<what_color_is_the>`).
    Baselines: the majority training answer (`vqa_acc_baseline`), and the blind baselines
    (`vqa_acc_question_only`, `vqa_acc_image_only`) where they were trained.

    The results are the head's answers in the official results format, `[{"question_id", "answer"}]`, the file
    the official evaluation and the VQA v2 test server read; empty unless every test question has an id."""
    index = {a: i for i, a in enumerate(heads.answers)}
    pairs = qa_pairs(test, index)
    if not pairs or heads.vqa is None:
        return {}, []
    idx, questions = [p[0] for p in pairs], [p[1] for p in pairs]
    qas = [qa for row in test.qa for qa in row]
    humans = [human_answers(qa) for qa in qas]
    answer_types, question_types = [qa.get("answer_type") for qa in qas], [qa.get("question_type") for qa in qas]

    def answer(model: torch.nn.Module) -> list[str]:
        return [heads.answers[i] for i in predict_answers(model, test, idx, questions, device).tolist()]

    def acc(model: torch.nn.Module) -> VQAAccuracy:
        return vqa_accuracy(answer(model), humans, answer_types, question_types)

    answers = answer(heads.vqa)
    head = vqa_accuracy(answers, humans, answer_types, question_types)
    out: dict[str, float] = {"vqa_acc": head.overall}
    majority = majority_answer([qa["answer"] for row in train.qa for qa in row])
    out["vqa_acc_baseline"] = vqa_accuracy([majority] * len(humans), humans).overall
    types = [qa["type"] for qa in qas]
    if types != answer_types:  # VQA v2's type is its answer type, reported below
        out.update({f"vqa_acc_{_slug(t)}": v for t, v in group_means(head.per_question, types).items()})
    out.update({f"vqa_acc_at_{_slug(t)}": v for t, v in head.per_answer_type.items()})
    out.update({f"vqa_acc_qt_{_slug(t)}": v for t, v in head.per_question_type.items()})
    for sees, model in heads.vqa_blind.items():
        out[f"vqa_acc_{sees}_only"] = acc(model).overall
    ids = [qa.get("question_id") for qa in qas]
    results = [] if None in ids else [{"question_id": _official_id(q), "answer": a} for q, a in zip(ids, answers,
                                                                                                  strict=True)]
    return out, results


def _official_id(question_id: str) -> int | str:
    """A question id as the official files hold it: VQA v2's are integers (stored as text)."""
    return int(question_id) if re.fullmatch(r"-?[0-9]+", question_id) else question_id


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
