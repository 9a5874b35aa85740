"""Text generation quality of the generator: perplexity beside a unigram baseline, diversity and copying."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mmcore.features import FeatureSet
from mmcore.metrics import distinct_n
from mmcore.models.text_heads import TextGenerator
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.loop import pad_batch


@torch.no_grad()
def _perplexity(model: TextGenerator, ids: list[list[int]], lang_idx: int, device: torch.device) -> float:
    nll, count = 0.0, 0
    for s in range(0, len(ids), 512):
        tgt = pad_batch(ids[s : s + 512]).to(device)  # (B, T)
        lang = torch.full((len(tgt),), lang_idx, dtype=torch.long, device=device)
        logits = model(lang, tgt[:, :-1])  # (B, T-1, V)
        nll += float(F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=0, reduction="sum"))
        count += int((tgt[:, 1:] != 0).sum())
    return math.exp(nll / max(1, count))


def _unigram_perplexity(train_ids: list[list[int]], test_ids: list[list[int]], vocab_size: int) -> float:
    """Perplexity of an add-one smoothed unigram model of the training tokens (every token but [BOS])."""
    counts = Counter(t for ids in train_ids for t in ids[1:])
    total = sum(counts.values()) + vocab_size
    tokens = [t for ids in test_ids for t in ids[1:]]
    nll = -sum(math.log((counts[t] + 1) / total) for t in tokens)
    return math.exp(nll / max(1, len(tokens)))


def evaluate_generation(model: TextGenerator, train: FeatureSet, test: FeatureSet, tokenizer: TextTokenizer,
                        device: torch.device, langs: Sequence[str] = ("en", "zh"), seed: int = 0,
                        n_samples: int = 200, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.9,
                        prompt_len: int = 2, max_len: int = 48,
                        n_examples: int = 5) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per language: perplexity of the test captions (baseline: add-one unigram model of the training
    tokens), and for texts sampled from the first `prompt_len` words of test captions, distinct-1/2 beside
    those of the test captions themselves (`..._reference`), and the share that copies a training caption."""
    model.eval()
    metrics: dict[str, float] = {}
    examples: list[dict[str, Any]] = []
    gen = torch.Generator(device=device).manual_seed(seed)
    for k, lang in enumerate(langs):
        train_ids = [ids for caps, cids in zip(train.captions, train.caption_ids, strict=True)
                     for c, ids in zip(caps, cids, strict=True) if c["lang"] == lang]
        test_caps = [(c["text"], ids) for caps, cids in zip(test.captions, test.caption_ids, strict=True)
                     for c, ids in zip(caps, cids, strict=True) if c["lang"] == lang]
        if not test_caps:
            continue
        test_ids = [ids for _, ids in test_caps]
        metrics[f"generation_perplexity_{lang}"] = _perplexity(model, test_ids, k, device)
        metrics[f"generation_perplexity_{lang}_baseline"] = _unigram_perplexity(train_ids, test_ids,
                                                                                tokenizer.vocab_size)
        chosen = test_caps[:n_samples]
        prompts = [ids[: 1 + prompt_len] for _, ids in chosen]
        prompts = [p[:-1] if p[-1] == tokenizer.eos_id else p for p in prompts]  # keep [EOS] out of prompts
        lang_idx = torch.full((len(prompts),), k, dtype=torch.long, device=device)
        out = model.generate(lang_idx, prompts, tokenizer.eos_id, max_len, temperature, top_k, top_p, gen)
        texts = [tokenizer.decode(ids) for ids in out]
        refs = [text for text, _ in chosen]
        for n in (1, 2):
            metrics[f"generation_distinct{n}_{lang}"] = distinct_n(texts, n, lang)
            metrics[f"generation_distinct{n}_{lang}_reference"] = distinct_n(refs, n, lang)
        seen = {tuple(ids) for ids in train_ids}
        metrics[f"generation_copied_{lang}"] = sum(tuple(ids) in seen for ids in out) / len(out)
        metrics[f"generation_copied_{lang}_reference"] = sum(tuple(ids) in seen for ids in test_ids) / len(test_ids)
        examples += [{"lang": lang, "prompt": tokenizer.decode(p), "text": t}
                     for p, t in zip(prompts[:n_examples], texts, strict=False)]
    return metrics, examples
