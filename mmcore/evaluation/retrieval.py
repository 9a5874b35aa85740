"""Text-image retrieval on the dual encoder's test embeddings, with the ceiling the data allows."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from mmcore.features import FeatureSet
from mmcore.metrics import retrieval_metrics, retrieval_metrics_folds, with_suffix

FOLD, FOLDS = 1000, 5  # COCO's 1K protocol: 5 folds of 1000 images


def evaluate_retrieval(test: FeatureSet, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Per-caption retrieval over every caption of every test image, with its ceiling (`t2i_r1_ceiling`).

    - Pooled over all languages: `t2i_r1`, `i2t_r5`, `t2i_mean_rank`, ... (each beside `<name>_baseline`).
    - With captions in more than one language, also per language with the language after the name
      (`t2i_r1_en`, `t2i_r1_zh`, ...): the same images, that language's captions only.
    - With at least 5000 test images, also COCO's 1K protocol (suffix `_1k`, after the language if any):
      the mean over 5 folds of 1000 consecutive images with their captions. The plain names are then the
      5K protocol when the split is COCO's 5000-image test set; images after the first 5000 are left out
      of the folds.

    Data without captions (a VQA dataset) has nothing to retrieve: no metrics.
    """
    if not any(len(t) for t in test.text_embeddings):
        return {}
    owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(test.text_embeddings)])
    texts = np.concatenate(test.text_embeddings)
    langs = np.array([c["lang"] for caps in test.captions for c in caps])
    # the same caption, however cased or spaced, is the same text (the tokenizer lowercases)
    same = np.array([" ".join(c["text"].lower().split()) for caps in test.captions for c in caps])
    groups = {"": np.ones(len(owner), dtype=bool)}
    if len(set(langs)) > 1:
        groups.update({f"_{_slug(lang)}": langs == lang for lang in sorted(set(langs))})
    out: dict[str, float] = {}
    for suffix, keep in groups.items():
        found = retrieval_metrics(test.image_embedding, texts[keep], owner[keep], ks, text_keys=same[keep])
        out.update(with_suffix(found, suffix))
        if len(test.image_embedding) >= FOLD * FOLDS:
            found = retrieval_metrics_folds(test.image_embedding, texts[keep], owner[keep], ks, FOLD, FOLDS,
                                            same[keep])
            out.update(with_suffix(found, f"{suffix}_1k"))
    out["t2i_r1_ceiling"] = retrieval_ceiling(test.captions)
    return out


def retrieval_ceiling(captions: list[list[dict]]) -> float:
    """The share of captions that describe exactly one image of the set: text-to-image R@1 cannot beat it
    by much, since a caption shared by several images ranks its own image first only by chance."""
    images_per_text = Counter(t for caps in captions for t in {c["text"].strip().lower() for c in caps})
    texts = [c["text"].strip().lower() for caps in captions for c in caps]
    return sum(images_per_text[t] == 1 for t in texts) / len(texts) if texts else 0.0


def _slug(lang: str) -> str:
    return re.sub(r"\W", "_", lang)
