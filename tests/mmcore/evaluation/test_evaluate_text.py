"""Translation and generation evaluation on tiny heads whose outputs are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmcore.evaluation import evaluate_generation, evaluate_translation, translate
from mmcore.evaluation.generation import _perplexity, _unigram_perplexity
from mmcore.features import FeatureSet
from mmcore.metrics import bleu, chrf
from mmcore.models.builders import HeadDims, build_generator, build_translator
from mmcore.text.tokenizer import TextTokenizer

CPU = torch.device("cpu")
CAPTIONS = [
    {"en": ["a red circle", "one red circle"], "zh": ["红色圆形", "一个红色圆形"]},
    {"en": ["a blue square", "a blue square"], "zh": ["蓝色方块", "蓝色方块"]},
    {"en": ["a green star", "two shapes"], "zh": ["绿色星形", "两个形状"]},
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train([t for c in CAPTIONS for ts in c.values() for t in ts], 200)


def _features(tok: TextTokenizer, captions: list[dict[str, list[str]]]) -> FeatureSet:
    caps = [[{"lang": lang, "text": t} for lang, ts in c.items() for t in ts] for c in captions]
    n = len(caps)
    return FeatureSet([str(i) for i in range(n)], np.zeros((n, 4), np.float32), np.zeros((n, 4), np.float32),
                      np.zeros((n, 4, 1), np.float32), [np.zeros((len(c), 4), np.float32) for c in caps], caps,
                      [tok.encode([c["text"] for c in cs], 16) for cs in caps], [[] for _ in caps],
                      [[] for _ in caps])


def _dims(tok: TextTokenizer) -> HeadDims:
    return HeadDims(tok.vocab_size, grid_dim=4, pooled_dim=4, cells=1, hidden=8, word_dim=8)


def test_unigram_perplexity_is_add_one_smoothed_over_the_training_tokens():
    # training tokens after [BOS]: 5, 5, 3; vocabulary 10 -> P(5) = 3/13, P(3) = 2/13
    assert _unigram_perplexity([[2, 5, 5, 3]], [[2, 5, 3]], 10) == pytest.approx(13 / math.sqrt(6))


def test_a_generator_with_flat_logits_has_the_vocabulary_as_perplexity(tok):
    torch.manual_seed(0)
    generator = build_generator(_dims(tok), 2)
    with torch.no_grad():
        generator.out.weight.zero_()
        generator.out.bias.zero_()
    data = _features(tok, CAPTIONS)
    ids = [data.caption_ids[0][0], data.caption_ids[1][1]]
    assert _perplexity(generator, ids, 0, CPU) == pytest.approx(tok.vocab_size, rel=1e-5)
    metrics, examples = evaluate_generation(generator, data, data, tok, CPU, ("en", "zh"), n_samples=3, max_len=5)
    assert metrics["generation_perplexity_en"] == pytest.approx(tok.vocab_size, rel=1e-5)
    en_ids = [ids for cids in data.caption_ids for ids in cids[:2]]
    assert metrics["generation_perplexity_en_baseline"] == pytest.approx(
        _unigram_perplexity(en_ids, en_ids, tok.vocab_size))
    assert metrics["generation_copied_en_reference"] == 1.0  # the test captions are the training captions
    assert {e["lang"] for e in examples} == {"en", "zh"}


def test_translation_is_scored_per_direction_beside_the_constant_caption(tok):
    torch.manual_seed(0)
    translator = build_translator(_dims(tok), 2)
    with torch.no_grad():  # always [EOS]: every translation is empty
        translator.out.weight.zero_()
        translator.out.bias.fill_(-1e4)
        translator.out.bias[tok.eos_id] = 1e4
    data = _features(tok, CAPTIONS)
    assert translate(translator, data.caption_ids[0], 1, tok, CPU) == ["", "", "", ""]
    metrics, examples = evaluate_translation(translator, data, data, tok, CPU, ("en", "zh"), n_examples=2)
    refs = [["红色圆形"], ["一个红色圆形"], ["蓝色方块"], ["蓝色方块"], ["绿色星形"], ["两个形状"]]
    assert metrics["translation_bleu_en_zh"] == 0.0
    assert metrics["translation_bleu_en_zh_baseline"] == pytest.approx(bleu(["蓝色方块"] * 6, refs, "zh"))
    assert metrics["translation_chrf_en_zh_baseline"] == pytest.approx(chrf(["蓝色方块"] * 6, refs))
    en_refs = [["a red circle"], ["one red circle"], ["a blue square"], ["a blue square"], ["a green star"],
               ["two shapes"]]
    assert metrics["translation_chrf_zh_en_baseline"] == pytest.approx(chrf(["a blue square"] * 6, en_refs))
    assert metrics["translation_chrf_zh_en_baseline"] > metrics["translation_chrf_zh_en"]
    assert examples[:2] == [
        {"direction": "zh_en", "source": "红色圆形", "translation": "", "reference": "a red circle"},
        {"direction": "zh_en", "source": "一个红色圆形", "translation": "", "reference": "one red circle"},
    ]
    assert [e["direction"] for e in examples] == ["zh_en", "zh_en", "en_zh", "en_zh"]
