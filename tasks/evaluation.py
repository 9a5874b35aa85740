"""Evaluation task: test-split metrics beside their baselines, logged to MLflow and reported in Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mmcore.config import PipelineConfig
from mmcore.data.dataset import load_tokenizer
from mmcore.evaluation import evaluate_all
from mmcore.features import MANIFEST, load_features
from mmcore.io import read_json
from mmcore.training.heads import load_heads
from mmcore.training.loop import select_device
from tasks import tracking

HEADLINE = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r1_ceiling", "t2i_r5", "t2i_r10", "t2i_mean_rank", "vqa_acc",
            "vqa_acc_question_only", "vqa_acc_image_only",
            "caption_bleu4", "caption_cider_d", "caption_rouge_l", "translation_bleu_en_zh", "translation_chrf_en_zh",
            "translation_bleu_zh_en", "translation_chrf_zh_en", "generation_perplexity_en", "generation_perplexity_zh")


@task
def evaluate_model(features_dir: str, processed_dir: str, heads_path: str, cfg: PipelineConfig,
                   run_id: str) -> dict[str, Any]:
    """Evaluate retrieval, VQA and captioning on the test split; returns metrics and example captions."""
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
    create_markdown_artifact(key=f"{cfg.dataset.lower().replace('_', '-').replace('.', '-')}-evaluation",
                             markdown=report_markdown(metrics, examples), description="test-split evaluation")
    return {"metrics": metrics, "examples": examples}


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, float, float | None]]:
    """(name, value, baseline) for the headline metrics present."""
    return [(k, metrics[k], metrics.get(f"{k}_baseline")) for k in HEADLINE if k in metrics]


def report_markdown(metrics: dict[str, float], examples: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# Evaluation (test split)", "", "| metric | value | baseline |", "|---|---|---|"]
    lines += [f"| {k} | {v:.4f} | {'' if b is None else f'{b:.4f}'} |" for k, v, b in metric_rows(metrics)]
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
