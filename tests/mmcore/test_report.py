"""The evaluation report: headline metrics beside their baselines and the champion's, the gate's decision,
and example outputs, as markdown."""

from __future__ import annotations

from mmcore.report import HEADLINE, metric_rows, report_markdown, vqa_by_type

GATE = {"name": "mmcore-gate", "version": "4", "alias": "challenger", "promoted": False,
        "reason": "@champion (version 3) was scored on a different test split"}


def test_metric_rows_are_the_headline_metrics_present_in_order_with_baselines():
    metrics = {"vqa_acc": 0.5, "t2i_r1": 0.25, "t2i_r1_baseline": 0.01, "records_in": 3.0}
    assert metric_rows(metrics) == [("t2i_r1", 0.25, 0.01), ("vqa_acc", 0.5, None)]
    assert HEADLINE.index("t2i_r1") < HEADLINE.index("vqa_acc")


def test_report_compares_with_the_champion_and_says_what_the_gate_decided():
    champion = {"version": "3", "metrics": {"t2i_r1": 0.40, "t2i_r1_baseline": 0.01, "vqa_acc": 0.5},
                "test_digest": "split-a"}
    md = report_markdown({"t2i_r1": 0.99, "t2i_r1_baseline": 0.01, "vqa_acc": 0.5}, {}, champion, GATE)
    assert md.splitlines()[:6] == ["# Evaluation (test split)", "", "| metric | value | baseline | @champion v3 |",
                                   "|---|---|---|---|", "| t2i_r1 | 0.9900 | 0.0100 | 0.4000 |",
                                   "| vqa_acc | 0.5000 |  | 0.5000 |"]
    assert "## Promotion" in md
    assert ("Version 4 of mmcore-gate is now **@challenger** (not promoted): @champion (version 3) was scored on a "
            "different test split.") in md
    assert md.endswith(".\n") and "## Example" not in md


def test_report_without_champion_or_gate_shows_examples():
    md = report_markdown({"vqa_acc": 0.75}, {"caption": [{"sample_id": "s1", "caption": "a red circle",
                                                          "references": ["a red circle", "a circle"]}],
                                             "translation": [{"direction": "en->zh", "source": "a red circle",
                                                              "translation": "红圆", "reference": "红色圆形"}]})
    assert "| metric | value | baseline | @champion |" in md and "| vqa_acc | 0.7500 |  |  |" in md
    assert "## Promotion" not in md
    assert "## Example captions" in md and "| s1 | a red circle | a red circle |" in md
    assert "## Example translations" in md and "| en->zh | a red circle | 红圆 | 红色圆形 |" in md
    assert "## Example generated text" not in md
    first = report_markdown({"vqa_acc": 0.75}, {}, None, {"name": "m", "version": "1", "alias": "champion",
                                                          "promoted": True, "reason": "no @champion yet"})
    assert "Version 1 of m is now **@champion** (promoted): no @champion yet." in first


def test_report_uses_the_configured_alias():
    md = report_markdown({"vqa_acc": 0.75}, {}, {"version": "7", "metrics": {"vqa_acc": 0.7}}, alias="best")
    assert "| metric | value | baseline | @best v7 |" in md and "| vqa_acc | 0.7500 |  | 0.7000 |" in md


def test_report_says_how_the_text_metrics_were_computed_when_they_are_shown():
    md = report_markdown({"caption_bleu4": 30.0, "translation_bleu_en_zh": 40.0}, {})
    assert "coco-caption's BLEU-1..4" in md and "case-insensitive" in md
    assert "coco-caption" not in report_markdown({"t2i_r1": 0.5}, {})


def test_vqa_accuracy_by_question_type_is_one_line_in_the_report():
    metrics = {"vqa_acc": 0.8, "vqa_acc_baseline": 0.1, "vqa_acc_question_only": 0.35, "vqa_acc_image_only": 0.12,
               "vqa_acc_shape": 0.629, "vqa_acc_color": 0.6984, "vqa_acc_yes_no": 0.845, "vqa_acc_at_number": 0.5,
               "vqa_acc_qt_what_color_is_the": 0.7}
    line = "VQA accuracy by question type: color 0.698, number 0.500, shape 0.629, yes_no 0.845"
    assert vqa_by_type(metrics) == line
    assert f"\n{line}\n" in report_markdown(metrics, {})
    assert vqa_by_type({"t2i_r1": 0.5}) == "" and "question type" not in report_markdown({"t2i_r1": 0.5}, {})
