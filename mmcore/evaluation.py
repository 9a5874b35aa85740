"""Evaluation of the dual encoder and the heads on a held-out split, each metric beside its baseline."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from mmcore.config import PipelineConfig
from mmcore.features import FeatureSet
from mmcore.metrics import (
    accuracy,
    accuracy_by_type,
    bleu,
    cider_d,
    distinct_n,
    majority_answer,
    retrieval_metrics,
    rouge_l,
)
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.heads import Heads, caption_pairs, predict_answers, qa_pairs
from mmcore.training.text_heads import evaluate_generation, evaluate_translation


def evaluate_retrieval(test: FeatureSet, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Per-caption retrieval over every caption of every test image (all languages), with its ceiling.

    Data without captions (a VQA dataset) has nothing to retrieve: no metrics.
    """
    if not any(len(t) for t in test.text_embeddings):
        return {}
    owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(test.text_embeddings)])
    out = retrieval_metrics(test.image_embedding, np.concatenate(test.text_embeddings), owner, ks)
    out["t2i_r1_ceiling"] = retrieval_ceiling(test.captions)
    return out


def retrieval_ceiling(captions: list[list[dict]]) -> float:
    """The share of captions that describe exactly one image of the set: text-to-image R@1 cannot beat it
    by much, since a caption shared by several images ranks its own image first only by chance."""
    images_per_text = Counter(t for caps in captions for t in {c["text"].strip().lower() for c in caps})
    texts = [c["text"].strip().lower() for caps in captions for c in caps]
    return sum(images_per_text[t] == 1 for t in texts) / len(texts) if texts else 0.0


def evaluate_vqa(heads: Heads, train: FeatureSet, test: FeatureSet, device: torch.device) -> dict[str, float]:
    index = {a: i for i, a in enumerate(heads.answers)}
    pairs = qa_pairs(test, index)
    if not pairs or heads.vqa is None:
        return {}
    pred_idx = predict_answers(heads.vqa, test, [p[0] for p in pairs], [p[1] for p in pairs], device)
    pred = [heads.answers[i] for i in pred_idx.tolist()]
    gold = [qa["answer"] for qas in test.qa for qa in qas]
    types = [qa["type"] for qas in test.qa for qa in qas]
    majority = majority_answer([qa["answer"] for qas in train.qa for qa in qas])
    out = {"vqa_acc": accuracy(pred, gold), "vqa_acc_baseline": accuracy([majority] * len(gold), gold)}
    out.update({f"vqa_acc_{_slug(t)}": v for t, v in accuracy_by_type(pred, gold, types).items()})
    for inputs, model in heads.vqa_blind.items():  # the same head seeing only the question, or only the image
        blind_idx = predict_answers(model, test, [p[0] for p in pairs], [p[1] for p in pairs], device, inputs=inputs)
        out[f"vqa_acc_{inputs}_only"] = accuracy([heads.answers[i] for i in blind_idx.tolist()], gold)
    return out


def generate_captions(heads: Heads, data: FeatureSet, tokenizer: TextTokenizer, device: torch.device,
                      max_len: int = 32, batch_size: int = 256, beam_size: int = 1,
                      length_penalty: float = 1.0) -> list[str]:
    out: list[str] = []
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(s + batch_size, len(data))))
        grid = torch.from_numpy(data.grid[idx]).to(device)
        pooled = torch.from_numpy(data.pooled[idx]).to(device)
        ids = heads.captioner.generate(grid, pooled, tokenizer.bos_id, tokenizer.eos_id, max_len,
                                       beam_size=beam_size, length_penalty=length_penalty)
        out.extend(tokenizer.decode(row) for row in ids.cpu().tolist())
    return out


def evaluate_captions(heads: Heads, train: FeatureSet, test: FeatureSet, tokenizer: TextTokenizer,
                      device: torch.device, max_len: int = 32, beam_size: int = 1,
                      length_penalty: float = 1.0) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """BLEU-1..4, CIDEr-D and ROUGE-L of greedy captions, and distinct-2 of the captions generated.

    Baseline: the most frequent training caption, predicted for every image.
    """
    lang = heads.caption_lang
    keep = sorted({i for i, _ in caption_pairs(test, lang)})
    if not keep or heads.captioner is None:
        return {}, []
    refs = [[c["text"] for c in test.captions[i] if c["lang"] == lang] for i in keep]
    hyps_all = generate_captions(heads, test, tokenizer, device, max_len, beam_size=beam_size,
                                 length_penalty=length_penalty)
    hyps = [hyps_all[i] for i in keep]
    common = Counter(c["text"] for caps in train.captions for c in caps if c["lang"] == lang).most_common(1)
    baseline = common[0][0] if common else ""
    metrics = {f"caption_{k}": v for k, v in _caption_scores(hyps, refs, lang).items()}
    constant = _caption_scores([baseline] * len(refs), refs, lang)
    metrics.update({f"caption_{k}_baseline": v for k, v in constant.items()})
    examples = [{"sample_id": test.sample_ids[i], "caption": h, "references": r}
                for i, h, r in zip(keep[:10], hyps[:10], refs[:10], strict=False)]
    return metrics, examples


def evaluate_all(train: FeatureSet, test: FeatureSet, heads: Heads, tokenizer: TextTokenizer, device: torch.device,
                 cfg: PipelineConfig) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Every test metric the model and data support (retrieval, VQA, captions, translation, generation),
    and examples of what the generating heads wrote, by head ("caption", "translation", "generation")."""
    if len(test) == 0:
        raise ValueError("the test split is empty: nothing to evaluate on")
    metrics = evaluate_retrieval(test, cfg.evaluate.ks)
    metrics.update(evaluate_vqa(heads, train, test, device))
    caption_metrics, examples = evaluate_captions(heads, train, test, tokenizer, device, cfg.heads.max_caption_len,
                                                 cfg.evaluate.beam_size, cfg.evaluate.length_penalty)
    metrics.update(caption_metrics)
    out = {"caption": examples}
    if heads.translator is not None:
        found, out["translation"] = evaluate_translation(heads.translator, train, test, tokenizer, device,
                                                         heads.text_langs, cfg.encoder.max_text_len,
                                                         cfg.evaluate.beam_size)
        metrics.update(found)
    if heads.generator is not None:
        e = cfg.evaluate
        found, out["generation"] = evaluate_generation(heads.generator, train, test, tokenizer, device,
                                                       heads.text_langs, cfg.heads.seed, temperature=e.temperature,
                                                       top_k=e.top_k, top_p=e.top_p,
                                                       max_len=cfg.encoder.max_text_len)
        metrics.update(found)
    metrics["test_images"] = len(test)
    return metrics, out


def _caption_scores(hyps: list[str], refs: list[list[str]], lang: str) -> dict[str, float]:
    scores = {f"bleu{n}": bleu(hyps, refs, lang, n) for n in (1, 2, 3, 4)}
    scores.update(cider_d=cider_d(hyps, refs, lang), rouge_l=rouge_l(hyps, refs, lang),
                  distinct2=distinct_n(hyps, 2, lang))
    return scores


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
