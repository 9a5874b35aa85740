"""VQA accuracy of the answer head, beside the majority answer and the blind baselines.

Every accuracy is the official VQA one (`mmcore.vqa_eval`: agreement with the ten human answers, as fractions
0-1, unrounded); a question with one answer (easy-VQA, the synthetic shapes) scores exact match.
"""

from __future__ import annotations

import torch

from mmcore.features import FeatureSet
from mmcore.metrics import majority_answer
from mmcore.training.heads import Heads, predict_answers, qa_pairs
from mmcore.vqa_eval import VQAAccuracy, group_means, human_answers, vqa_accuracy


def evaluate_vqa(heads: Heads, train: FeatureSet, test: FeatureSet, device: torch.device) -> dict[str, float]:
    """Accuracy overall (`vqa_acc`) and per question `type` (`vqa_acc_<type>`, unless it is the answer type);
    where the data has them, per VQA answer type (`vqa_acc_at_<yes_no|number|other>`) and question type
    (`vqa_acc_qt_<what_color_is_the>`).
    Baselines: the majority training answer (`vqa_acc_baseline`), and the blind baselines
    (`vqa_acc_question_only`, `vqa_acc_image_only`) where they were trained."""
    index = {a: i for i, a in enumerate(heads.answers)}
    pairs = qa_pairs(test, index)
    if not pairs or heads.vqa is None:
        return {}
    idx, questions = [p[0] for p in pairs], [p[1] for p in pairs]
    qas = [qa for row in test.qa for qa in row]
    humans = [human_answers(qa) for qa in qas]
    answer_types, question_types = [qa.get("answer_type") for qa in qas], [qa.get("question_type") for qa in qas]

    def acc(model: torch.nn.Module) -> VQAAccuracy:
        pred = [heads.answers[i] for i in predict_answers(model, test, idx, questions, device).tolist()]
        return vqa_accuracy(pred, humans, answer_types, question_types)

    head = acc(heads.vqa)
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
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
