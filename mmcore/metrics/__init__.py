"""Evaluation metrics, each with the chance or trivial baseline it should be read against.

One module per kind, each matching a reference implementation: `retrieval` (OpenCLIP / CLIP_benchmark
recall@k), `captions` (coco-caption's BLEU, CIDEr-D, ROUGE-L on its PTB tokens, `ptb`), `translation`
(sacrebleu's BLEU and chrF) and `answers` (VQA accuracy).
"""

from __future__ import annotations

from mmcore.metrics.answers import accuracy, accuracy_by_type, majority_answer
from mmcore.metrics.captions import caption_bleu, caption_tokens, cider_d, distinct_n, rouge_l
from mmcore.metrics.ptb import ptb_tokens
from mmcore.metrics.retrieval import retrieval_metrics, retrieval_metrics_folds, with_suffix
from mmcore.metrics.translation import bleu, chrf

__all__ = ["accuracy", "accuracy_by_type", "bleu", "caption_bleu", "caption_tokens", "chrf", "cider_d",
           "distinct_n", "majority_answer", "ptb_tokens", "retrieval_metrics", "retrieval_metrics_folds",
           "rouge_l", "with_suffix"]
