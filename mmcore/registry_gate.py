"""The champion gate: does a newly trained model (the challenger) replace the current champion?

Pure functions, no MLflow: the register task reads the champion's metrics and test-split digest from the
model registry, calls `decide`, and sets the alias it returns.

Rules, in order:
1. no champion yet: the challenger becomes champion;
2. no primary metric in the challenger's (or the champion's) metrics: challenger;
3. the champion was scored on a different (or unknown) test split: challenger (scores are not comparable;
   re-score the champion or promote by hand);
4. the challenger is better than the champion by more than `margin` (in the metric's direction): champion;
5. otherwise: challenger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mmcore.config import RegistryConfig

# Auto primary metric: the first of these the challenger has. Retrieval leads because every captioned
# dataset has it; VQA-only data (easy-VQA) has no captions, so no retrieval or caption metrics.
PRIMARY_ORDER = ("t2i_r1", "vqa_acc", "caption_cider_d", "i2t_r1", "caption_bleu4", "translation_chrf_en_zh",
                 "generation_perplexity_en")
# Metrics where smaller is better, by name fragment (ranks, perplexities, losses).
_LOWER_IS_BETTER = ("mean_rank", "median_rank", "perplexity", "loss")
_EPS = 1e-9  # float noise: 0.51 - 0.50 > 0.01 in binary, yet it is a gain of exactly the margin


@dataclass(frozen=True)
class Scored:
    """A model's test metrics and the digest of the test split they were computed on."""

    metrics: Mapping[str, float]
    test_digest: str | None
    version: str | None = None  # registered model version, for the reason text


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    alias: str  # the alias the challenger gets: cfg.alias or cfg.challenger_alias
    metric: str | None  # the primary metric compared
    challenger_value: float | None
    champion_value: float | None
    reason: str


def higher_is_better(metric: str) -> bool:
    return not any(part in metric for part in _LOWER_IS_BETTER)


def primary_metric(metrics: Mapping[str, float], cfg: RegistryConfig) -> str | None:
    """The configured primary metric, or the first of PRIMARY_ORDER present in `metrics`."""
    if cfg.primary_metric:
        return cfg.primary_metric
    return next((m for m in PRIMARY_ORDER if _value(metrics, m) is not None), None)


def decide(challenger: Scored, champion: Scored | None, cfg: RegistryConfig) -> GateDecision:
    """Decide which alias the challenger gets; the reason says why in one sentence."""
    metric = primary_metric(challenger.metrics, cfg)
    new = _value(challenger.metrics, metric) if metric else None

    def result(promote: bool, reason: str, old: float | None = None) -> GateDecision:
        return GateDecision(promote, cfg.alias if promote else cfg.challenger_alias, metric, new, old, reason)

    if champion is None:
        return result(True, f"no @{cfg.alias} yet: the first model becomes @{cfg.alias}")
    who = f"@{cfg.alias}" + (f" (version {champion.version})" if champion.version else "")
    if metric is None:
        return result(False, f"the challenger has none of the primary metrics {list(PRIMARY_ORDER)}")
    if new is None:
        return result(False, f"the challenger has no value for the primary metric {metric}")
    old = _value(champion.metrics, metric)
    if old is None:
        return result(False, f"{who} has no {metric} to compare with; promote by hand if the challenger is better")
    if not challenger.test_digest or champion.test_digest != challenger.test_digest:
        return result(False, f"{who} was scored on a different test split (digest {_short(champion.test_digest)}, "
                             f"challenger {_short(challenger.test_digest)}): scores are not comparable", old)
    gain = new - old if higher_is_better(metric) else old - new
    direction = "higher" if higher_is_better(metric) else "lower"
    compared = f"{metric} {new:.4f} vs {who} {old:.4f} ({direction} is better, margin {cfg.margin:g})"
    if gain > cfg.margin + _EPS:
        return result(True, f"{compared}: better by {gain:.4f}", old)
    if gain > _EPS:
        return result(False, f"{compared}: better by only {gain:.4f}, within the margin", old)
    return result(False, f"{compared}: not better", old)


def _value(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "unknown"
