from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore.losses import contrastive_loss
from mmcore.metrics import (
    accuracy,
    bleu,
    caption_tokens,
    chrf,
    cider_d,
    distinct_n,
    majority_answer,
    retrieval_metrics,
    rouge_l,
)


def test_contrastive_loss_prefers_aligned_pairs():
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = contrastive_loss(emb, emb, torch.tensor(20.0))
    shuffled = contrastive_loss(emb, emb.roll(1, dims=0), torch.tensor(20.0))
    assert aligned["loss"] < shuffled["loss"]
    assert set(aligned) == {"loss", "i2t_loss", "t2i_loss"}


def test_retrieval_perfect_and_chance():
    img = np.eye(4, dtype=np.float32)
    txt = np.repeat(img, 2, axis=0)  # two captions per image
    owner = np.repeat(np.arange(4), 2)
    m = retrieval_metrics(img, txt, owner, ks=(1, 2))
    assert m["t2i_r1"] == 1.0 and m["i2t_r1"] == 1.0
    assert m["t2i_r1_baseline"] == 0.25 and m["t2i_r2_baseline"] == 0.5
    assert m["i2t_r1_baseline"] == pytest.approx(2 / 8)  # one of 2 relevant among 8 on top
    wrong = retrieval_metrics(img, np.roll(txt, 2, axis=0), owner, ks=(1,))
    assert wrong["t2i_r1"] == 0.0


def test_retrieval_random_embeddings_score_near_chance():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 8)).astype(np.float32)
    txt = rng.normal(size=(400, 8)).astype(np.float32)
    m = retrieval_metrics(img, txt, np.repeat(np.arange(200), 2), ks=(10,))
    assert abs(m["t2i_r10"] - m["t2i_r10_baseline"]) < 0.04
    assert abs(m["t2i_mean_rank"] / m["t2i_mean_rank_baseline"] - 1) < 0.1  # (200 + 1) / 2
    assert abs(m["i2t_mean_rank"] / m["i2t_mean_rank_baseline"] - 1) < 0.1  # (400 + 1) / 3


def test_mean_and_median_ranks_count_from_one():
    img = np.eye(3, dtype=np.float32)
    m = retrieval_metrics(img, img[[0, 2, 1]], np.arange(3), ks=(1,))  # text 0 right, texts 1 and 2 second
    assert m["t2i_median_rank"] == 2.0 and m["t2i_mean_rank"] == pytest.approx(5 / 3)


def test_accuracy_and_majority():
    assert majority_answer(["yes", "no", "yes"]) == "yes"
    assert accuracy(["a", "b"], ["a", "c"]) == 0.5
    with pytest.raises(ValueError):
        accuracy([], [])


def test_bleu_identical_is_100_and_handles_uneven_references():
    assert bleu(["a large red circle at the top left"], [["a large red circle at the top left"]]) == pytest.approx(100)
    score = bleu(["a red circle", "two blue squares on the left"],
                 [["a red circle", "one red circle"], ["two blue squares on the left"]])
    assert score == pytest.approx(100)
    assert bleu(["红色圆形在左侧"], [["红色圆形在左侧"]], lang="zh") == pytest.approx(100)
    assert bleu(["blue"], [["a large red circle at the top left"]]) < 5


def test_images_without_texts_are_left_out_of_image_to_text():
    img = np.eye(3, dtype=np.float32)
    m = retrieval_metrics(img, img[:2], np.array([0, 1]), ks=(1,))
    assert m["i2t_r1"] == 1.0 and m["t2i_r1"] == 1.0


# Captions scored by coco-caption's reference implementation (pycocoevalcap 1.2, cider_scorer.CiderScorer
# with n=4, sigma=6, and rouge.Rouge) on the same tokens: CIDEr-D 3.882700317886271, ROUGE-L
# 0.7096219931271478. Our implementations must give the same values so figures compare with papers.
HYPS = ["a large red circle at the top left", "two blue squares", "a small green triangle in the middle",
        "a yellow circle"]
REFS = [["a large red circle at the top left", "a big red circle in the top left corner"],
        ["two blue squares on the right", "a pair of blue squares"],
        ["a green triangle in the centre", "a small green triangle in the middle", "green triangle, small, middle"],
        ["a purple square at the bottom"]]


def test_cider_d_and_rouge_l_match_the_coco_caption_reference():
    assert cider_d(HYPS, REFS) == pytest.approx(3.882700317886271, rel=1e-12)
    assert rouge_l(HYPS, REFS) == pytest.approx(0.7096219931271478, rel=1e-12)
    constant = ["a large red circle at the top left"] * 4
    assert cider_d(constant, REFS) < cider_d(HYPS, REFS) and rouge_l(constant, REFS) < rouge_l(HYPS, REFS)


def test_bleu_orders_chrf_and_distinct_n():
    scores = [bleu(["a red circle on the left"], [["a red circle at the left"]], order=n) for n in (1, 2, 3, 4)]
    assert scores[0] == pytest.approx(100 * 5 / 6) and scores == sorted(scores, reverse=True)
    assert chrf(["红色圆形在左侧"], [["红色圆形在左侧"]]) == pytest.approx(100)
    assert chrf(["红色圆形在左侧"], [["蓝色方块在右侧"]]) < 40
    assert distinct_n(["a b a b", "a c"], 1) == 0.5 and distinct_n(["a b a b", "a c"], 2) == 0.75
    assert caption_tokens("A red, round circle!") == ["a", "red", "round", "circle"]
    assert caption_tokens("红色圆形。", "zh") == ["红", "色", "圆", "形"]
    with pytest.raises(ValueError, match="reference list"):
        cider_d(["a"], [[]])


def test_retrieval_ceiling_counts_captions_of_exactly_one_image():
    from mmcore.evaluation import retrieval_ceiling

    captions = [[{"text": "a red circle"}, {"text": "one red circle"}],
                [{"text": "A red circle "}, {"text": "a blue square"}],
                [{"text": "a blue square"}]]
    assert retrieval_ceiling(captions) == pytest.approx(1 / 5)  # only "one red circle" names one image
    assert retrieval_ceiling([]) == 0.0
