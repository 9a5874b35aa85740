"""The evaluation report: headline test metrics beside their baselines and the current champion's, the
champion gate's decision, and examples of what the generating heads wrote. Plain markdown, shown as a
Prefect artifact and in the terminal's tables."""

from __future__ import annotations

from typing import Any

HEADLINE = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r1_ceiling", "t2i_r5", "t2i_r10", "t2i_mean_rank", "vqa_acc",
            "vqa_acc_question_only", "vqa_acc_image_only",
            "caption_bleu4", "caption_cider_d", "caption_rouge_l", "translation_bleu_en_zh", "translation_chrf_en_zh",
            "translation_bleu_zh_en", "translation_chrf_zh_en", "generation_perplexity_en", "generation_perplexity_zh")

# how the text metrics were computed, said under the table when they are in it
METRIC_NOTES = {
    "caption_": "Captions: coco-caption's BLEU-1..4 (0-100), CIDEr-D and ROUGE-L, on its PTB tokens (lower case).",
    "translation_": "Translation: sacrebleu's BLEU (tokenizer 13a, zh for Chinese) and chrF, case-insensitive: "
                    "the tokenizer lower-cases what it writes.",
}


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, float, float | None]]:
    """(name, value, baseline) for the headline metrics present."""
    return [(k, metrics[k], metrics.get(f"{k}_baseline")) for k in HEADLINE if k in metrics]


_NOT_A_TYPE = ("vqa_acc_baseline", "vqa_acc_question_only", "vqa_acc_image_only")


def vqa_by_type(metrics: dict[str, float]) -> str:
    """The VQA head's accuracy per question type (`vqa_acc_<type>`, or VQA v2's answer types `vqa_acc_at_<type>`)
    as one line, "VQA accuracy by question type: color 0.698, count 0.888, ..."; empty without any."""
    types = sorted((k.removeprefix("vqa_acc_").removeprefix("at_"), v) for k, v in metrics.items()
                   if k.startswith("vqa_acc_") and k not in _NOT_A_TYPE and not k.startswith("vqa_acc_qt_"))
    return ("VQA accuracy by question type: " + ", ".join(f"{t} {v:.3f}" for t, v in types)) if types else ""


def report_markdown(metrics: dict[str, float], examples: dict[str, list[dict[str, Any]]],
                    champion: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
                    alias: str = "champion") -> str:
    """Metrics beside baseline and `champion` ({version, metrics}), then the gate's decision when `model`
    (the registration's result: name, version, alias, promoted, reason) is given, then example outputs."""
    theirs = champion["metrics"] if champion else {}
    head = f"@{alias}" + (f" v{champion['version']}" if champion and champion.get("version") else "")
    lines = ["# Evaluation (test split)", "", f"| metric | value | baseline | {head} |", "|---|---|---|---|"]
    lines += [f"| {k} | {v:.4f} | {_fmt(b)} | {_fmt(theirs.get(k))} |" for k, v, b in metric_rows(metrics)]
    if by_type := vqa_by_type(metrics):
        lines += ["", by_type]
    notes = [note for prefix, note in METRIC_NOTES.items() if any(k.startswith(prefix) for k in metrics)]
    for note in notes:
        lines += ["", note]
    if model is not None:
        verdict = "promoted" if model["promoted"] else "not promoted"
        lines += ["", "## Promotion", "",
                  f"Version {model['version']} of {model['name']} is now **@{model['alias']}** ({verdict}): "
                  f"{model['reason']}."]
    lines += _examples(examples)
    return "\n".join(lines) + "\n"


def _examples(examples: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
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
    return lines


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
