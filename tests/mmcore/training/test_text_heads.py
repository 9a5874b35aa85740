"""The text-only heads on shapes captions: the en <-> zh translator and the language-conditioned generator."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcore.config import HeadsConfig
from mmcore.evaluation import evaluate_generation, evaluate_translation
from mmcore.features import FeatureSet
from mmcore.models import decoding
from mmcore.models.builders import build_generator, build_translator
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.loop import pad_batch
from mmcore.training.text_heads import head_dims, parallel_pairs, train_generator, train_translator

CPU = torch.device("cpu")
LANGS = ("en", "zh")
CFG = HeadsConfig(epochs=15, batch_size=32, lr=1.5e-2, hidden=64, word_dim=32, device="cpu")


def _feature_set(records: list[dict], tok: TextTokenizer) -> FeatureSet:
    """Captions and their ids as the pipeline stores them; the text heads never read the image arrays."""
    caps = [[{"lang": lang, "text": t} for lang, texts in r["captions"].items() for t in texts] for r in records]
    n = len(records)
    return FeatureSet([r["id"] for r in records], np.zeros((n, 4), np.float32), np.zeros((n, 4), np.float32),
                      np.zeros((n, 4, 1), np.float32), [np.zeros((len(c), 4), np.float32) for c in caps], caps,
                      [tok.encode([c["text"] for c in cs], 48) for cs in caps], [[] for _ in caps],
                      [[] for _ in caps])


@pytest.fixture(scope="module")
def data(shapes_raw: Path) -> tuple[FeatureSet, FeatureSet, FeatureSet, TextTokenizer]:
    """120 shapes images: 100 train, 10 validation, 10 test."""
    records = [json.loads(line) for line in (shapes_raw / "annotations.jsonl").read_text("utf-8").splitlines()]
    tok = TextTokenizer.train([t for r in records for texts in r["captions"].values() for t in texts], 4000)
    return (_feature_set(records[:100], tok), _feature_set(records[100:110], tok), _feature_set(records[110:], tok),
            tok)


@pytest.fixture(scope="module")
def translator(data):
    train, val, _, tok = data
    return train_translator(train, val, CFG, tok.vocab_size, CPU, LANGS)


@pytest.fixture(scope="module")
def generator(data):
    train, val, _, tok = data
    return train_generator(train, val, CFG, tok.vocab_size, CPU, LANGS)


def test_parallel_pairs_match_captions_by_position(data):
    train, _, _, tok = data
    pairs = parallel_pairs(train, "en", "zh")
    assert len(pairs) == 2 * len(train)  # the shapes data has 2 captions per language per image
    first = train.captions[0]
    assert tok.decode(pairs[0][0]) == first[0]["text"] and tok.decode(pairs[0][1]) == first[2]["text"]
    assert [p[::-1] for p in pairs] == parallel_pairs(train, "zh", "en")


def test_samples_with_unequal_caption_counts_are_skipped(data):
    train, _, _, _ = data
    odd = replace(train, captions=[train.captions[0][:3], train.captions[1]],
                  caption_ids=[train.caption_ids[0][:3], train.caption_ids[1]])  # image 0 lost a Chinese caption
    assert parallel_pairs(odd, "en", "zh") == [tuple(train.caption_ids[1][i] for i in p) for p in ((0, 2), (1, 3))]


def test_translator_beats_the_constant_baseline_both_ways(data, translator):
    train, _, test, tok = data
    metrics, examples = evaluate_translation(translator, train, test, tok, CPU, LANGS, max_len=48)
    # a few epochs on 100 images: far from the demo's ~90 BLEU, but clearly past the constant caption
    assert metrics["translation_bleu_en_zh"] > metrics["translation_bleu_en_zh_baseline"] + 15
    assert metrics["translation_chrf_en_zh"] > metrics["translation_chrf_en_zh_baseline"] + 10
    assert metrics["translation_bleu_zh_en"] > metrics["translation_bleu_zh_en_baseline"] + 5
    assert {e["direction"] for e in examples} == {"en_zh", "zh_en"}
    assert set(examples[0]) == {"direction", "source", "translation", "reference"}


def test_translator_steps_match_teacher_forcing_and_ignore_padding(data, translator):
    _, _, test, tok = data
    src = [ids for ids, _ in parallel_pairs(test, "en", "zh")[:4]]
    tgt = [ids for _, ids in parallel_pairs(test, "en", "zh")[:4]]
    s, t, lang = pad_batch(src), pad_batch(tgt), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        forced = translator(s, lang, t[:, :-1])  # (B, T, V)
        state = translator.init_state(s, lang)
        for i in range(5):
            logits, state = translator.step(t[:, i], state)
            torch.testing.assert_close(logits, forced[:, i], atol=1e-5, rtol=1e-5)
        # the same source alone (no padding) and in a batch beside longer ones translate the same
        alone = translator.generate(pad_batch(src[:1]), lang[:1], tok.bos_id, tok.eos_id, 48)
        batched = translator.generate(pad_batch(src[:1] + [src[1] * 2]), lang[:2], tok.bos_id, tok.eos_id, 48)
    assert batched[0, : alone.shape[1]].tolist() == alone[0].tolist()


def test_beam_one_is_greedy_and_wider_beams_run(data, translator):
    _, _, test, tok = data
    src = pad_batch([ids for ids, _ in parallel_pairs(test, "zh", "en")[:6]])
    lang = torch.zeros(6, dtype=torch.long)  # into English
    greedy = translator.generate(src, lang, tok.bos_id, tok.eos_id, 48)
    beam1 = decoding.beam_search(translator.step, translator.init_state(src, lang), tok.bos_id, tok.eos_id, 48, 1)[0]
    assert torch.equal(greedy, beam1)
    beam3 = translator.generate(src, lang, tok.bos_id, tok.eos_id, 48, beam_size=3)
    assert beam3.shape[0] == 6 and bool((beam3 == tok.eos_id).any(dim=1).all())


def test_translator_rebuilds_from_its_state_dict(data, translator):
    train, _, test, tok = data
    again = build_translator(head_dims(train, tok.vocab_size, CFG), len(LANGS))
    again.load_state_dict(translator.state_dict())
    src = torch.tensor([parallel_pairs(test, "en", "zh")[0][0]])
    lang = torch.ones(1, dtype=torch.long)
    assert torch.equal(again.eval().generate(src, lang, tok.bos_id, tok.eos_id),
                       translator.generate(src, lang, tok.bos_id, tok.eos_id))


def test_no_parallel_captions_is_a_clear_error(data):
    train, val, _, tok = data
    english = replace(train, captions=[c[:2] for c in train.captions], caption_ids=[c[:2] for c in train.caption_ids])
    with pytest.raises(ValueError, match=r"no parallel captions between \['en', 'zh'\].*has \['en'\]"):
        train_translator(english, val, CFG, tok.vocab_size, CPU, LANGS)


def test_generation_is_reproducible_and_continues_the_prompt(data, generator):
    _, _, test, tok = data
    prompts = [test.caption_ids[0][0][:3], test.caption_ids[1][2][:2], [tok.bos_id]]  # en, zh, bare [BOS]
    lang = torch.tensor([0, 1, 0])

    def draw(seed: int) -> list[list[int]]:
        return generator.generate(lang, prompts, tok.eos_id, 40, top_p=0.9,
                                  generator=torch.Generator().manual_seed(seed))

    out = draw(0)
    assert out == draw(0)
    assert out != draw(1)
    for p, o in zip(prompts, out, strict=True):
        assert o[: len(p)] == p and len(o) <= len(p) + 40
    greedy = generator.generate(lang, prompts, tok.eos_id, 40, do_sample=False)
    assert greedy == generator.generate(lang, prompts, tok.eos_id, 40, temperature=0.0)  # sampling at T=0


def test_generator_state_after_a_prompt_matches_teacher_forcing(data, generator):
    _, _, test, _ = data
    ids = torch.tensor([test.caption_ids[0][2][:6]])  # a Chinese caption's first words
    lang = torch.ones(1, dtype=torch.long)
    with torch.no_grad():
        forced = generator(lang, ids)  # (1, 6, V)
        logits, state = generator.step(torch.zeros(1, dtype=torch.long), generator.init_state(lang, [ids[0].tolist()]))
    torch.testing.assert_close(logits, forced[:, -1], atol=1e-5, rtol=1e-5)
    rebuilt = build_generator(head_dims(test, generator.out.out_features, CFG), len(LANGS))
    rebuilt.load_state_dict(generator.state_dict())


def test_generator_perplexity_beats_the_unigram_baseline(data, generator):
    train, _, test, tok = data
    metrics, examples = evaluate_generation(generator, train, test, tok, CPU, LANGS, seed=0, n_samples=20)
    for lang in LANGS:
        assert metrics[f"generation_perplexity_{lang}"] < 0.5 * metrics[f"generation_perplexity_{lang}_baseline"]
        for key in (f"generation_distinct1_{lang}", f"generation_distinct2_{lang}_reference",
                    f"generation_copied_{lang}"):
            assert 0.0 <= metrics[key] <= 1.0
    assert {e["lang"] for e in examples} == set(LANGS)
