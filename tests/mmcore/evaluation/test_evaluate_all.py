"""evaluate_all: every metric the heads and data support, and retrieval and captions on known outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore.config import PipelineConfig
from mmcore.evaluation import evaluate_all, evaluate_captions, evaluate_retrieval
from mmcore.evaluation.captions import caption_scores
from mmcore.features import FeatureSet
from mmcore.models.builders import HeadDims, build_captioner
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.heads import Heads

CPU = torch.device("cpu")
TEXTS = [["a red circle", "one red circle"], ["a blue square"], ["a blue square"]]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train([t for ts in TEXTS for t in ts], 100)


def _features(tok: TextTokenizer, texts: list[list[str]]) -> FeatureSet:
    """Image i's embedding is the unit vector e_i, and so is each of its captions': retrieval is perfect."""
    n = len(texts)
    eye = np.eye(max(n, 1), 4, dtype=np.float32)
    caps = [[{"lang": "en", "text": t} for t in ts] for ts in texts]
    return FeatureSet([str(i) for i in range(n)], eye[:n], np.ones((n, 4), np.float32),
                      np.ones((n, 4, 1), np.float32), [np.repeat(eye[i : i + 1], len(ts), 0) for i, ts in
                                                       enumerate(texts)], caps,
                      [tok.encode(ts, 16) for ts in texts], [[] for _ in texts], [[] for _ in texts])


def _dims(tok: TextTokenizer) -> HeadDims:
    return HeadDims(tok.vocab_size, grid_dim=4, pooled_dim=4, cells=1, hidden=8, word_dim=8)


def test_retrieval_is_perfect_on_matching_embeddings_and_absent_without_captions(tok):
    metrics = evaluate_retrieval(_features(tok, TEXTS), ks=(1,))
    assert metrics["i2t_r1"] == 1.0 and metrics["t2i_r1"] == 1.0
    assert metrics["t2i_r1_ceiling"] == pytest.approx(2 / 4)  # "a blue square" names two images
    assert evaluate_retrieval(_features(tok, [[], []])) == {}


def test_captions_are_scored_beside_the_most_frequent_training_caption(tok):
    torch.manual_seed(0)
    captioner = build_captioner(_dims(tok))
    with torch.no_grad():  # always [EOS]: every caption is empty
        captioner.out.weight.zero_()
        captioner.out.bias.fill_(-1e4)
        captioner.out.bias[tok.eos_id] = 1e4
    data = _features(tok, TEXTS)
    heads = Heads(None, [], captioner, "en", _dims(tok))
    metrics, examples = evaluate_captions(heads, data, data, tok, CPU)
    constant = caption_scores(["a blue square"] * 3, TEXTS, "en")
    assert {k: v for k, v in metrics.items() if k.endswith("_baseline")} == {
        f"caption_{k}_baseline": v for k, v in constant.items()}
    assert metrics["caption_bleu1"] == 0.0 and metrics["caption_cider_d"] == 0.0
    assert examples[0] == {"sample_id": "0", "caption": "", "references": TEXTS[0]}


def test_evaluate_all_reports_what_the_heads_support(tok):
    data = _features(tok, TEXTS)
    metrics, examples = evaluate_all(data, data, Heads(None, [], None, "en", _dims(tok)), tok, CPU, PipelineConfig())
    assert metrics["test_images"] == 3 and metrics["t2i_r1"] == 1.0
    assert not any(k.startswith(("vqa", "caption", "translation", "generation")) for k in metrics)
    assert examples == {"caption": []}
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate_all(data, _features(tok, []), Heads(None, [], None, "en", _dims(tok)), tok, CPU, PipelineConfig())
