"""evaluate_retrieval: pooled metrics under today's names, per language when there are several, COCO's 1K
protocol from 5000 images, and the ceiling the captions allow."""

from __future__ import annotations

import numpy as np
import pytest

import mmcore.evaluation.retrieval as retrieval_module
from mmcore.evaluation.retrieval import evaluate_retrieval, retrieval_ceiling
from mmcore.features import FeatureSet
from mmcore.metrics import retrieval_metrics, retrieval_metrics_folds


def _features(image_emb: np.ndarray, captions: list[list[dict]], text_emb: list[np.ndarray]) -> FeatureSet:
    n = len(image_emb)
    return FeatureSet([str(i) for i in range(n)], image_emb, np.ones((n, 4), np.float32),
                      np.ones((n, 4, 1), np.float32), text_emb, captions, [[] for _ in range(n)],
                      [[] for _ in range(n)], [[] for _ in range(n)])


def _bilingual(n: int, seed: int = 0) -> tuple[FeatureSet, np.ndarray, np.ndarray, np.ndarray]:
    """n images, each with two English captions and one Chinese one; Chinese embeddings are noisier."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, 8)).astype(np.float32)
    langs = np.array(["en", "en", "zh"])
    noise = np.array([0.5, 0.5, 2.0], dtype=np.float32)[:, None]
    text = [img[i] + noise * rng.normal(size=(3, 8)).astype(np.float32) for i in range(n)]
    caps = [[{"lang": str(lang), "text": f"caption {i} {k}"} for k, lang in enumerate(langs)] for i in range(n)]
    return _features(img, caps, text), img, np.concatenate(text), np.repeat(np.arange(n), 3)


def test_pooled_metrics_keep_their_names_and_each_language_is_scored_on_its_own():
    data, img, txt, owner = _bilingual(30)
    found = evaluate_retrieval(data, ks=(1, 5))
    pooled = retrieval_metrics(img, txt, owner, (1, 5))
    assert all(found[k] == v for k, v in pooled.items())
    en = np.tile([True, True, False], 30)
    only_en = retrieval_metrics(img, txt[en], owner[en], (1, 5))
    assert found["t2i_r1_en"] == only_en["t2i_r1"] and found["i2t_r5_en_baseline"] == only_en["i2t_r5_baseline"]
    assert found["t2i_r1_zh"] < found["t2i_r1_en"]  # the noisier language retrieves worse
    assert not any(k.endswith("_1k") or "_1k_" in k for k in found)  # fewer than 5000 images
    assert "t2i_r1_ceiling" in found


def test_one_language_has_no_per_language_names():
    img = np.eye(3, 4, dtype=np.float32)
    caps = [[{"lang": "en", "text": t}] for t in ("a", "b", "c")]
    found = evaluate_retrieval(_features(img, caps, [img[i : i + 1] for i in range(3)]), ks=(1,))
    assert found["t2i_r1"] == 1.0 and not any(k.endswith("_en") or "_en_" in k for k in found)


def test_five_thousand_images_add_the_1k_protocol(monkeypatch):
    monkeypatch.setattr(retrieval_module, "FOLD", 10)  # 5 folds of 10 images stand in for 5 of 1000
    data, img, txt, owner = _bilingual(53)
    found = evaluate_retrieval(data, ks=(1,))
    folds = retrieval_metrics_folds(img, txt, owner, (1,), fold=10, folds=5)
    assert found["t2i_r1_1k"] == folds["t2i_r1"] and found["t2i_r1_1k_baseline"] == pytest.approx(0.1)
    zh = np.tile([False, False, True], 53)
    assert found["i2t_r1_zh_1k"] == retrieval_metrics_folds(img, txt[zh], owner[zh], (1,), 10, 5)["i2t_r1"]
    assert found["t2i_r1_baseline"] == pytest.approx(1 / 53)  # the plain names stay the whole split's


def test_retrieval_ceiling_counts_captions_of_exactly_one_image():
    captions = [[{"text": "a red circle"}, {"text": "one red circle"}],
                [{"text": "A red circle "}, {"text": "a blue square"}],
                [{"text": "a blue square"}]]
    assert retrieval_ceiling(captions) == pytest.approx(1 / 5)  # only "one red circle" names one image
    assert retrieval_ceiling([]) == 0.0
