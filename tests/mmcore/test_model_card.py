"""The model card says what the model answers, how well beside each baseline, what it was trained on and with,
and where its code came from."""

from __future__ import annotations

from mmcore.config import load_config
from mmcore.model_card import Provenance, model_card

METRICS = {"t2i_r1": 0.5, "t2i_r1_baseline": 0.01, "caption_cider_d": 1.25, "caption_cider_d_baseline": 0.5,
           "test_images": 100}


def test_the_card_lists_what_was_evaluated_beside_its_baselines():
    cfg = load_config("demo", {"encoder.image_arch": "resnet18", "encoder.weights": "IMAGENET1K_V1"})
    card = model_card("mmcore-demo", cfg, METRICS, Provenance("a" * 64, "b" * 64, "c0ffee", True, "run-1"),
                      {"max_rows": 64})
    assert card.startswith("# mmcore-demo\n")
    assert "- `search`" in card and "- `caption`" in card and "- `ask`" not in card
    assert "| t2i_r1 | 0.5000 | 0.0100 |" in card and "| caption_cider_d | 1.2500 | 0.5000 |" in card
    assert "test split (100 images)" in card and "coco-caption" in card  # how the caption metrics are computed
    assert f"digest `{'a' * 64}`" in card and f"`{'b' * 64}`" in card
    assert "`c0ffee` with uncommitted changes" in card and "run `run-1`" in card
    assert "from weights `IMAGENET1K_V1`" in card and "max_rows 64" in card


def test_a_card_without_a_checkout_says_so():
    card = model_card("m", load_config("smoke"), {"vqa_acc": 0.9, "vqa_acc_baseline": 0.3}, Provenance("d", "t"), {})
    assert "unknown (not run from a git checkout)" in card and "trained from scratch" in card
    assert "- `ask`" in card and "- `search`" not in card
