"""Evaluation of the dual encoder and the heads on a held-out split, each metric beside its baseline.

One module per head: `retrieval`, `vqa`, `captions`, `translation`, `generation`; `evaluate_all` runs
every one the model and data support.
"""

from __future__ import annotations

from typing import Any

import torch

from mmcore.config import PipelineConfig
from mmcore.evaluation.captions import caption_scores, evaluate_captions, generate_captions
from mmcore.evaluation.generation import evaluate_generation
from mmcore.evaluation.retrieval import evaluate_retrieval, retrieval_ceiling
from mmcore.evaluation.translation import evaluate_translation, translate
from mmcore.evaluation.vqa import evaluate_vqa, vqa_metrics_and_results
from mmcore.features import FeatureSet
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.heads import Heads

__all__ = ["caption_scores", "evaluate_all", "evaluate_captions", "evaluate_generation", "evaluate_retrieval",
           "evaluate_translation", "evaluate_vqa", "generate_captions", "retrieval_ceiling", "translate",
           "vqa_metrics_and_results"]


def evaluate_all(train: FeatureSet, test: FeatureSet, heads: Heads, tokenizer: TextTokenizer, device: torch.device,
                 cfg: PipelineConfig) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Every test metric the model and data support (retrieval, VQA, captions, translation, generation),
    and examples of what the generating heads wrote, by head ("caption", "translation", "generation"); "vqa"
    holds the VQA head's answers as the official results file, where the questions have ids (VQA v2)."""
    if len(test) == 0:
        raise ValueError("the test split is empty: nothing to evaluate on")
    metrics = evaluate_retrieval(test, cfg.evaluate.ks)
    found, vqa_results = vqa_metrics_and_results(heads, train, test, device)
    metrics.update(found)
    caption_metrics, examples = evaluate_captions(heads, train, test, tokenizer, device, cfg.heads.max_caption_len,
                                                 cfg.evaluate.beam_size, cfg.evaluate.length_penalty)
    metrics.update(caption_metrics)
    out = {"caption": examples}
    if vqa_results:
        out["vqa"] = vqa_results
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
