"""Text-image retrieval on the dual encoder's test embeddings, with the ceiling the data allows."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mmcore.features import FeatureSet
from mmcore.metrics import retrieval_metrics


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
