"""VQA v2 from ingest to metrics: the ten answers and the types of the official-format fixture travel through the
sample shards into the evaluation, whose accuracies are those of the official evaluation code on the raw files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmcore.catalog import ProcessedDir
from mmcore.data.ingest import ingest
from mmcore.data.sources import open_source
from mmcore.evaluation import vqa_metrics_and_results
from mmcore.evaluation.vqa import _slug
from mmcore.features import FeatureSet
from mmcore.models.builders import HeadDims
from mmcore.training.heads import Heads
from tests.mmcore.data.sources.sourcekit import CFG, read_rows, solid_png
from tests.reference import vqa_fixture as F

DIMS = HeadDims(vocab_size=10, grid_dim=2, pooled_dim=2, cells=1, hidden=8, word_dim=8)
PREDICTIONS = list(dict.fromkeys(pred for *_, pred in F.QUESTIONS.values()))  # the answer classes


class Scripted(nn.Module):
    """Answers question k (its one token) with the fixture's prediction for it."""

    def __init__(self, classes: list[int]):
        super().__init__()
        self.classes = torch.tensor(classes)

    def forward(self, grid, pooled, question_ids, owner=None):
        return nn.functional.one_hot(self.classes[question_ids[:, 0]], len(PREDICTIONS)).float()  # (Q, A)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureSet, list[int]]:
    """The fixture ingested; its questions as a FeatureSet (no features: the scripted head needs none), and
    the class the head answers each with."""
    tmp = tmp_path_factory.mktemp("vqa")
    root = F.write(tmp / "v2")
    for image_id in (1, 2, 3, 4):
        solid_png(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", (50 * image_id, 20, 20))
    ingest(open_source(root), out := ProcessedDir(tmp / "out"), CFG, workers=1)
    rows = read_rows(out, "samples")
    n = len(rows)
    by_question = {q: qid for qid, (_, q, *_) in F.QUESTIONS.items()}
    qa = [row["qa"] for row in rows]
    flat = [by_question[q["question"]] for r in qa for q in r]
    ids, k = [], 0
    for r in qa:
        ids.append([[k + i] for i in range(len(r))])
        k += len(r)
    data = FeatureSet([row["sample_id"] for row in rows], np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32),
                      np.zeros((n, 2, 1), np.float32), [np.zeros((0, 4), np.float32)] * n, [[]] * n, [[]] * n, qa, ids)
    return data, [PREDICTIONS.index(F.QUESTIONS[qid][5]) for qid in flat]


def test_metrics_are_the_official_accuracies(ingested, tmp_path):
    data, classes = ingested
    official = F.official_scores(F.write(tmp_path))
    mean = lambda values: float(sum(values)) / len(values)  # noqa: E731
    heads = Heads(Scripted(classes), PREDICTIONS, None, "en", DIMS)
    metrics, results = vqa_metrics_and_results(heads, data, data, torch.device("cpu"))
    expected = {"vqa_acc": mean(official["overall"])}
    expected.update({f"vqa_acc_at_{_slug(t)}": mean(v) for t, v in official["per_answer_type"].items()})
    expected.update({f"vqa_acc_qt_{_slug(t)}": mean(v) for t, v in official["per_question_type"].items()})
    baseline = metrics.pop("vqa_acc_baseline")
    assert metrics == pytest.approx(expected, abs=1e-6)  # and no `vqa_acc_<type>` copies: VQA v2's is the answer type
    assert len([k for k in metrics if k.startswith("vqa_acc_qt_")]) == 15
    assert metrics["vqa_acc_at_yes_no"] == pytest.approx(1.3 / 3)
    # the answers as the official results file the evaluation above read
    assert sorted(results, key=lambda r: r["question_id"]) == sorted(F.results(), key=lambda r: r["question_id"])
    # the majority training answer, "yes" (the answer of 2 of the 16 questions, which 10 and 9 humans gave)
    assert baseline == pytest.approx(2 / 16)
