"""The evaluate stage: metrics beside their baselines, from the heads and features the catalog names."""

from __future__ import annotations

from mmcore.stages import evaluate


def test_metrics_and_examples_of_every_head(smoke_stages):
    cfg, cat, run = smoke_stages
    r = run.evaluate
    for name in ("t2i_r1", "vqa_acc", "caption_bleu4", "translation_bleu_en_zh", "generation_perplexity_en"):
        assert name in r.metrics and f"{name}_baseline" in r.metrics
    assert r.metrics["t2i_r1_baseline"] == 1 / r.metrics["test_images"]
    assert set(r.examples) == {"caption", "translation", "generation"} and r.outputs == []
    assert evaluate.run(cfg, cat).metrics == r.metrics  # evaluation is deterministic


def test_the_inputs_cover_the_heads_and_the_evaluation_settings(smoke_stages):
    cfg, cat, _ = smoke_stages
    base = evaluate.inputs(cfg, cat)
    assert base["heads"] == smoke_stages[2].train.heads_sha256
    beam = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"beam_size": 3})})
    longer = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"max_caption_len": 8})})
    assert evaluate.inputs(beam, cat)["config"] != base["config"] != evaluate.inputs(longer, cat)["config"]
