"""Evaluation tasks: test-split metrics beside their baselines and the current champion's, logged to MLflow
and reported in Prefect with the champion gate's decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.evaluation import evaluate_all
from mmcore.features import MANIFEST, load_features
from mmcore.io import file_sha256, read_json
from mmcore.training.heads import load_heads
from mmcore.training.loop import select_device
from tasks import tracking
from tasks.caching import CACHE_EXPIRATION, digest_cache
from tasks.registry import champion_scores

HEADLINE = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r1_ceiling", "t2i_r5", "t2i_r10", "t2i_mean_rank", "vqa_acc",
            "vqa_acc_question_only", "vqa_acc_image_only",
            "caption_bleu4", "caption_cider_d", "caption_rouge_l", "translation_bleu_en_zh", "translation_chrf_en_zh",
            "translation_bleu_zh_en", "translation_chrf_zh_en", "generation_perplexity_en", "generation_perplexity_zh")


def _cache_parts(p: dict) -> dict:
    cfg: PipelineConfig = p["cfg"]
    return {"features": read_json(Path(p["features_dir"]) / MANIFEST)["digest"], "heads": file_sha256(p["heads_path"]),
            "config": cfg.digest("evaluate")}


@task(cache_key_fn=digest_cache("evaluate", _cache_parts), persist_result=True, cache_expiration=CACHE_EXPIRATION)
def evaluate_model(features_dir: str, processed_dir: str, heads_path: str, cfg: PipelineConfig,
                   run_id: str) -> dict[str, Any]:
    """Evaluate every head on the test split; returns metrics and examples (cached on the features' and
    heads' digests, the evaluate config and the code)."""
    device = select_device(cfg.heads.device)
    tracking.log_dataset(run_id, f"{cfg.dataset}-features", features_dir,
                         read_json(Path(features_dir) / MANIFEST)["digest"], "test")
    train = load_features(features_dir, processed_dir, ("train",))
    test = load_features(features_dir, processed_dir, ("test",))
    metrics, examples = evaluate_all(train, test, load_heads(heads_path, device), load_tokenizer(processed_dir),
                                     device, cfg)
    tracking.log_metrics(run_id, metrics)
    for head, rows in examples.items():
        tracking.log_dict(run_id, rows, f"{head}_examples.json")
    return {"metrics": metrics, "examples": examples}


@task
def publish_report(cfg: PipelineConfig, metrics: dict[str, float], examples: dict[str, list[dict[str, Any]]],
                   model: dict[str, Any] | None = None) -> str:
    """Create the `<dataset>-evaluation` markdown artifact; `model` is register_model's result (gate decision).

    Without `model` (evaluation only), the champion column shows the current champion.
    """
    if model is not None:
        champion = model["champion"]  # the champion the gate compared with, as it was before registration
    else:
        scores = champion_scores(cfg)
        champion = None if scores is None else {"version": scores.version, "metrics": dict(scores.metrics)}
    markdown = report_markdown(metrics, examples, champion, model, cfg.registry.alias)
    create_markdown_artifact(key=f"{cfg.dataset.lower().replace('_', '-').replace('.', '-')}-evaluation",
                             markdown=markdown, description="test-split evaluation and promotion")
    return markdown


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, float, float | None]]:
    """(name, value, baseline) for the headline metrics present."""
    return [(k, metrics[k], metrics.get(f"{k}_baseline")) for k in HEADLINE if k in metrics]


def report_markdown(metrics: dict[str, float], examples: dict[str, list[dict[str, Any]]],
                    champion: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
                    alias: str = "champion") -> str:
    """The evaluation report: metrics beside baseline and `champion` ({version, metrics}), then the gate's
    decision when `model` (register_model's result) is given, then example outputs."""
    theirs = champion["metrics"] if champion else {}
    head = f"@{alias}" + (f" v{champion['version']}" if champion and champion.get("version") else "")
    lines = ["# Evaluation (test split)", "", f"| metric | value | baseline | {head} |", "|---|---|---|---|"]
    lines += [f"| {k} | {v:.4f} | {_fmt(b)} | {_fmt(theirs.get(k))} |" for k, v, b in metric_rows(metrics)]
    if model is not None:
        verdict = "promoted" if model["promoted"] else "not promoted"
        lines += ["", "## Promotion", "",
                  f"Version {model['version']} of {model['name']} is now **@{model['alias']}** ({verdict}): "
                  f"{model['reason']}."]
    if examples.get("caption"):
        lines += ["", "## Example captions", "", "| sample | generated | reference |", "|---|---|---|"]
        lines += [f"| {e['sample_id']} | {e['caption']} | {e['references'][0]} |" for e in examples["caption"][:5]]
    if examples.get("translation"):
        lines += ["", "## Example translations", "", "| direction | source | translation | reference |",
                  "|---|---|---|---|"]
        lines += [f"| {e['direction']} | {e['source']} | {e['translation']} | {e['reference']} |"
                  for e in examples["translation"][:6]]
    if examples.get("generation"):
        lines += ["", "## Example generated text", "", "| language | prompt | text |", "|---|---|---|"]
        lines += [f"| {e['lang']} | {e['prompt']} | {e['text']} |" for e in examples["generation"][:6]]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
