"""The champion gate's pure decision: which alias a new model gets against the current champion."""

from __future__ import annotations

import pytest

from mmcore.config import RegistryConfig
from mmcore.registry_gate import PRIMARY_ORDER, Scored, decide, higher_is_better, primary_metric

CFG = RegistryConfig(margin=0.01)


def _champion(metrics: dict[str, float], digest: str | None = "split-a") -> Scored:
    return Scored(metrics, digest, version="3")


@pytest.mark.parametrize(("new", "old", "promote", "says"), [
    (0.52, 0.50, True, "better by 0.0200"),  # beats by more than the margin
    (0.505, 0.50, False, "within the margin"),  # better, but not by the margin
    (0.51, 0.50, False, "within the margin"),  # exactly the margin is not enough
    (0.50, 0.50, False, "not better"),  # a tie
    (0.40, 0.50, False, "not better"),  # worse
])
def test_higher_is_better_metric_needs_the_margin(new, old, promote, says):
    d = decide(Scored({"t2i_r1": new}, "split-a"), _champion({"t2i_r1": old}), CFG)
    assert (d.promote, d.alias) == (promote, "champion" if promote else "challenger")
    assert (d.metric, d.challenger_value, d.champion_value) == ("t2i_r1", new, old)
    assert says in d.reason and "@champion (version 3)" in d.reason


def test_lower_is_better_metric():
    cfg = RegistryConfig(primary_metric="generation_perplexity_en", margin=0.5)
    better = decide(Scored({"generation_perplexity_en": 9.0}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                    cfg)
    assert better.promote and "lower is better" in better.reason and "better by 1.0000" in better.reason
    worse = decide(Scored({"generation_perplexity_en": 11.0}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                   cfg)
    assert not worse.promote and "not better" in worse.reason
    close = decide(Scored({"generation_perplexity_en": 9.8}, "s"), _champion({"generation_perplexity_en": 10.0}, "s"),
                   cfg)
    assert not close.promote and "within the margin" in close.reason
    assert not higher_is_better("t2i_mean_rank") and not higher_is_better("val_caption_loss")
    assert higher_is_better("vqa_acc") and higher_is_better("caption_cider_d")


def test_first_model_becomes_champion_whatever_its_scores():
    d = decide(Scored({"t2i_r1": 0.0}, "split-a"), None, CFG)
    assert (d.promote, d.alias, d.champion_value) == (True, "champion", None)
    assert d.reason == "no @champion yet: the first model becomes @champion"
    empty = decide(Scored({}, None), None, CFG)
    assert (empty.promote, empty.metric) == (True, None)


def test_different_or_unknown_test_split_is_never_promoted():
    d = decide(Scored({"t2i_r1": 0.9}, "split-b"), _champion({"t2i_r1": 0.1}, "split-a"), CFG)
    assert not d.promote and d.alias == "challenger"
    assert "different test split" in d.reason and "split-a" in d.reason and "split-b" in d.reason
    old = decide(Scored({"t2i_r1": 0.9}, "split-a"), _champion({"t2i_r1": 0.1}, None), CFG)  # pre-gate champion
    assert not old.promote and "digest unknown" in old.reason


def test_missing_primary_metric():
    no_metric = decide(Scored({"t2i_r1": 0.9}, "s"), _champion({"vqa_acc": 0.5}, "s"), CFG)
    assert not no_metric.promote and "has no t2i_r1" in no_metric.reason
    nothing = decide(Scored({"records_in": 3.0}, "s"), _champion({"t2i_r1": 0.5}, "s"), CFG)
    assert not nothing.promote and nothing.metric is None and "none of the primary metrics" in nothing.reason
    configured = decide(Scored({"t2i_r1": 0.9}, "s"), _champion({"t2i_r1": 0.1}, "s"),
                        RegistryConfig(primary_metric="vqa_acc"))
    assert not configured.promote and "no value for the primary metric vqa_acc" in configured.reason
    nan = decide(Scored({"t2i_r1": float("nan")}, "s"), _champion({"t2i_r1": 0.1}, "s"),
                 RegistryConfig(primary_metric="t2i_r1"))
    assert (nan.promote, nan.challenger_value) == (False, None)
    assert "no value for the primary metric t2i_r1" in nan.reason


def test_auto_primary_metric_follows_the_documented_order():
    assert primary_metric({"vqa_acc": 0.5, "caption_cider_d": 1.0, "t2i_r1": 0.1}, CFG) == "t2i_r1" == PRIMARY_ORDER[0]
    assert primary_metric({"vqa_acc": 0.5, "caption_cider_d": 1.0}, CFG) == "vqa_acc"  # easy-VQA: no captions
    assert primary_metric({"caption_cider_d": 1.0}, CFG) == "caption_cider_d"
    assert primary_metric({"caption_cider_d": 1.0}, RegistryConfig(primary_metric="i2t_r5")) == "i2t_r5"
    assert primary_metric({"records_in": 3.0}, CFG) is None


def test_registry_config_validates():
    with pytest.raises(ValueError, match="margin"):
        RegistryConfig(margin=-0.1)
    with pytest.raises(ValueError, match="must differ"):
        RegistryConfig(alias="best", challenger_alias="best")
    assert RegistryConfig().margin == 0.005 and RegistryConfig().challenger_alias == "challenger"
