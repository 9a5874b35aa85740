"""The evaluate stage: metrics beside their baselines, from the heads and features the catalog names."""

from __future__ import annotations

import pytest

from mmcore.integrity import CorruptOutput
from mmcore.stages import evaluate
from tests.mmcore.stages.corruptkit import truncate
from tests.mmcore.stages.stagekit import copy_run


def test_metrics_and_examples_of_every_head(smoke_stages):
    cfg, cat, run = smoke_stages
    r = run.evaluate
    for name in ("t2i_r1", "vqa_acc", "caption_bleu4", "translation_bleu_en_zh", "generation_perplexity_en"):
        assert name in r.metrics and f"{name}_baseline" in r.metrics
    assert r.metrics["t2i_r1_baseline"] == 1 / r.metrics["test_images"]
    assert set(r.examples) == {"caption", "translation", "generation"} and r.outputs == {}
    assert evaluate.run(cfg, cat).metrics == r.metrics  # evaluation is deterministic


def test_the_inputs_cover_the_heads_and_the_evaluation_settings(smoke_stages):
    cfg, cat, _ = smoke_stages
    base = evaluate.inputs(cfg, cat)
    assert base["heads"] == smoke_stages[2].train.heads_sha256
    beam = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"beam_size": 3})})
    longer = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"max_caption_len": 8})})
    assert evaluate.inputs(beam, cat)["config"] != base["config"] != evaluate.inputs(longer, cat)["config"]


def test_corrupt_heads_or_features_are_one_error_naming_the_file_and_the_stage_to_refresh(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    truncate(cat.features.listed()[0])
    with pytest.raises(CorruptOutput, match=r"features-\d+.parquet is corrupt .*\(--refresh extract\)$"):
        evaluate.run(cfg, cat)
    truncate(cat.heads.heads)
    with pytest.raises(CorruptOutput) as err:
        evaluate.run(cfg, cat)
    assert str(err.value).startswith(f"{cat.heads.heads} is corrupt (torch.load fails on its ")
    assert str(err.value).endswith(": run the train stage again (--refresh train)")
