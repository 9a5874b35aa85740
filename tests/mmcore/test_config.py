from __future__ import annotations

import pytest

from mmcore.config import PipelineConfig, load_config, preset_names


def test_presets_load_and_are_complete():
    assert {"demo", "smoke"} <= set(preset_names())
    cfg = load_config("demo")
    assert cfg.dataset == "shapes" and cfg.model_name == "mmcore-shapes"


def test_unknown_keys_fail_loudly(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pretrain:\n  epochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(path)


def test_overrides_are_typed_like_the_command_line():
    cfg = load_config("smoke", {"pretrain.epochs": "5", "encoder.bidirectional": "false"}, dataset="other")
    assert cfg.pretrain.epochs == 5 and cfg.encoder.bidirectional is False and cfg.dataset == "other"


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="text_rnn"):
        load_config("smoke", {"encoder.text_rnn": "rnn9"})
    with pytest.raises(ValueError, match="split"):
        load_config("smoke", {"ingest.split": [0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("nope")


def test_digest_changes_only_with_the_named_sections():
    a = load_config("smoke")
    b = load_config("smoke", {"heads.epochs": 7})
    assert a.digest("ingest", "encoder", "pretrain") == b.digest("ingest", "encoder", "pretrain")
    assert a.digest("heads") != b.digest("heads")
    assert a.digest() == PipelineConfig.model_validate(a.model_dump()).digest()


def test_flat_params_cover_every_leaf():
    flat = load_config("demo").flat()
    assert flat["pretrain.epochs"] == load_config("demo").pretrain.epochs
    assert "encoder.image_arch" in flat and "ingest.split" in flat
