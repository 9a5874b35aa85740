"""Retrieval recall and ranks: equal to CLIP_benchmark's and OpenCLIP's on shared fixtures, ties counted
against the query, non-finite embeddings refused, and the 1K protocol's folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcore.metrics import retrieval_metrics, retrieval_metrics_folds, with_suffix
from tests.reference.clip_benchmark_retrieval import clip_benchmark_recalls
from tests.reference.open_clip_metrics import get_clip_metrics

KS = (1, 5, 10)


def _fixture(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 images with 1-5 texts each; with `ties`, embeddings in {-1, 0, 1}^3 so that many scores are equal."""
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(40), rng.integers(1, 6, size=40))
    if ties:
        img = rng.integers(-1, 2, size=(40, 3)).astype(np.float64)
        txt = np.where(rng.random((len(owner), 3)) < 0.6, img[owner], rng.integers(-1, 2, size=(len(owner), 3)))
        return img, txt.astype(np.float64), owner
    img = rng.normal(size=(40, 8))
    txt = img[owner] + 1.5 * rng.normal(size=(len(owner), 8))
    return img / np.linalg.norm(img, axis=1, keepdims=True), txt / np.linalg.norm(txt, axis=1, keepdims=True), owner


def _reference(img: np.ndarray, txt: np.ndarray, owner: np.ndarray, against_positives: bool) -> dict[str, float]:
    """CLIP_benchmark's recalls; `against_positives` first lowers each true pair's score by less than any gap
    between distinct scores, so the ties its top-k would break arbitrarily go against the query."""
    scores = torch.from_numpy(txt @ img.T)  # (texts, images)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), torch.from_numpy(owner)] = True
    if against_positives:
        scores = scores - 0.25 * positive  # scores are integers here
    found = clip_benchmark_recalls(scores, positive, KS)
    return {**{f"t2i_r{k}": found[f"image_retrieval_recall@{k}"] for k in KS},
            **{f"i2t_r{k}": found[f"text_retrieval_recall@{k}"] for k in KS}}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recalls_equal_clip_benchmarks_without_ties(seed):
    img, txt, owner = _fixture(seed, ties=False)
    ours = retrieval_metrics(img, txt, owner, KS)
    for name, value in _reference(img, txt, owner, against_positives=False).items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_count_against_the_query(seed):
    img, txt, owner = _fixture(seed, ties=True)
    ours = retrieval_metrics(img, txt, owner, KS)
    pessimistic = _reference(img, txt, owner, against_positives=True)
    as_sorted = _reference(img, txt, owner, against_positives=False)  # top-k's own tie order
    assert any(pessimistic[n] != as_sorted[n] for n in pessimistic)  # the fixture has ties that matter
    for name, value in pessimistic.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
        assert ours[name] <= as_sorted[name] + 1e-6, name


def test_ranks_equal_open_clips_one_text_per_image():
    rng = np.random.default_rng(3)
    img, txt = rng.normal(size=(51, 8)), rng.normal(size=(51, 8))  # odd: its floored median is the median
    ours = retrieval_metrics(img, txt, np.arange(51), KS)
    ref = get_clip_metrics(torch.from_numpy(img), torch.from_numpy(txt), 1.0)
    for ours_dir, ref_dir in (("i2t", "image_to_text"), ("t2i", "text_to_image")):
        assert ours[f"{ours_dir}_mean_rank"] == pytest.approx(ref[f"{ref_dir}_mean_rank"], abs=1e-9)
        assert ours[f"{ours_dir}_median_rank"] == ref[f"{ref_dir}_median_rank"]
        for k in KS:
            assert ours[f"{ours_dir}_r{k}"] == pytest.approx(ref[f"{ref_dir}_R@{k}"], abs=1e-9)


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_all_equal_embeddings_score_no_better_than_chance(value):
    img = np.full((100, 4), value, dtype=np.float32)
    txt = np.full((200, 4), value, dtype=np.float32)
    m = retrieval_metrics(img, txt, np.repeat(np.arange(100), 2), KS)
    for k in KS:
        assert m[f"t2i_r{k}"] <= m[f"t2i_r{k}_baseline"] and m[f"i2t_r{k}"] <= m[f"i2t_r{k}_baseline"]
    assert m["t2i_r1"] == 0.0 and m["t2i_mean_rank"] == 100.0  # every other image ties: all ranked above


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_refused_in_one_line(bad):
    img, txt = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)
    img[1, 2] = bad
    with pytest.raises(ValueError, match=r"^retrieval: image embeddings hold 1 non-finite values") as info:
        retrieval_metrics(img, txt, np.arange(3))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="text embeddings hold 1"):
        retrieval_metrics(txt, img, np.arange(3))
    with pytest.raises(ValueError, match="similarities"):  # finite, but their products overflow
        retrieval_metrics(np.full((2, 2), 1e30, np.float32), np.full((2, 2), 1e30, np.float32), np.arange(2))


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
    txt = np.array([[1, 0, 0], [0, 0.2, 1], [0, 1, 0.2]], dtype=np.float32)  # text 0 right, 1 and 2 second
    m = retrieval_metrics(img, txt, np.arange(3), ks=(1,))
    assert m["t2i_median_rank"] == 2.0 and m["t2i_mean_rank"] == pytest.approx(5 / 3)


def test_images_without_texts_are_left_out_of_image_to_text():
    img = np.eye(3, dtype=np.float32)
    m = retrieval_metrics(img, img[:2], np.array([0, 1]), ks=(1,))
    assert m["i2t_r1"] == 1.0 and m["t2i_r1"] == 1.0


def test_an_image_whose_texts_tie_each_other_is_still_a_hit():
    img = np.eye(2, dtype=np.float32)
    txt = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # image 0's two texts tie with each other
    assert retrieval_metrics(img, txt, np.array([0, 0, 1]), ks=(1,))["i2t_r1"] == 1.0


def test_folds_average_the_metrics_of_consecutive_blocks_of_images():
    rng = np.random.default_rng(4)
    img = rng.normal(size=(30, 8))
    owner = np.repeat(np.arange(30), 2)
    txt = img[owner] + rng.normal(size=(60, 8))
    found = retrieval_metrics_folds(img, txt, owner, (1,), fold=10, folds=3)
    blocks = [retrieval_metrics(img[i : i + 10], txt[2 * i : 2 * i + 20], owner[2 * i : 2 * i + 20] - i, (1,))
              for i in (0, 10, 20)]
    assert found["t2i_r1"] == pytest.approx(np.mean([b["t2i_r1"] for b in blocks]))
    assert found["t2i_r1_baseline"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="5 folds of 1000 images need 5000 images, got 30"):
        retrieval_metrics_folds(img, txt, owner)


def test_with_suffix_keeps_baseline_last():
    assert with_suffix({"t2i_r1": 0.5, "t2i_r1_baseline": 0.1}, "_en") == {"t2i_r1_en": 0.5,
                                                                            "t2i_r1_en_baseline": 0.1}


def test_texts_that_are_the_same_caption_are_hits_for_image_to_text_not_competitors():
    """Two images share the caption "a red circle": with perfect embeddings each image's own copy ties with
    the other image's copy. As the same caption, the copy is a hit (keys); as a mere tie it counts against."""
    img = np.eye(3, dtype=np.float32)
    txt = np.stack([img[0], img[0], img[2]])  # image 1's caption is the same text as image 0's
    owner = np.array([0, 1, 2])
    keys = np.array(["a red circle", "a red circle", "a blue square"])
    plain, keyed = retrieval_metrics(img, txt, owner, (1,)), retrieval_metrics(img, txt, owner, (1,), keys)
    assert plain["i2t_r1"] == pytest.approx(1 / 3) and keyed["i2t_r1"] == pytest.approx(2 / 3)
    assert keyed["t2i_r1"] == plain["t2i_r1"]  # text to image is per text: keys change nothing there
    assert keyed["i2t_r1_baseline"] > plain["i2t_r1_baseline"]  # two relevant texts are likelier by chance


def test_unique_keys_are_the_plain_protocol_and_collapse_still_scores_nothing():
    img, txt, owner = _fixture(3, ties=True)
    unique = np.array([f"caption {i}" for i in range(len(txt))])
    assert retrieval_metrics(img, txt, owner, text_keys=unique) == retrieval_metrics(img, txt, owner)
    same = np.ones_like(img) / np.sqrt(img.shape[1])
    collapsed = retrieval_metrics(same, np.ones_like(txt) / np.sqrt(txt.shape[1]), owner, text_keys=unique)
    assert collapsed["i2t_r1"] == 0.0 and collapsed["t2i_r1"] == 0.0
