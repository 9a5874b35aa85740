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
    with pytest.raises(ValueError, match="text_encoder"):
        load_config("smoke", {"encoder.text_encoder": "rnn9"})
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


def test_a_preset_named_in_the_data_is_applied_once_and_fields_beside_it_win(tmp_path):
    cfg = PipelineConfig.model_validate({"preset": "smoke", "pretrain": {"epochs": 5}})
    smoke = load_config("smoke")
    assert cfg.preset is None  # applied: a built config starts from nothing again
    assert cfg.pretrain.epochs == 5 and cfg.pretrain.batch_size == smoke.pretrain.batch_size
    assert cfg.model_copy(update={"pretrain": smoke.pretrain}) == smoke
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # a round trip changes nothing
    child = tmp_path / "child.yaml"  # a preset file may start from another preset
    child.write_text("preset: smoke\nheads:\n  epochs: 9\n")
    assert load_config(child).heads.epochs == 9 and load_config(child).heads.hidden == smoke.heads.hidden
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"preset: {loop}\n")
    with pytest.raises(ValueError, match="loop"):
        load_config(loop)


def test_the_preset_is_not_a_parameter_or_part_of_a_digest():
    cfg = load_config("demo")
    assert "preset" not in cfg.flat()
    assert cfg.digest() == load_config("demo", {"pretrain.log_every_steps": 5}).digest()


def test_streamed_pretraining_and_several_nodes_say_what_they_need():
    from mmcore.config import load_config

    with pytest.raises(ValueError, match="hard_negatives needs pretrain.data=memory"):
        load_config("demo", {"pretrain.data": "stream"})  # the demo batches hard negatives
    with pytest.raises(ValueError, match="objective=joint needs pretrain.data=memory"):
        load_config("demo", {"pretrain.data": "stream", "pretrain.hard_negatives": 0})  # the demo is joint
    streamed = {"pretrain.data": "stream", "pretrain.hard_negatives": 0, "pretrain.objective": "contrastive"}
    assert load_config("demo", streamed).pretrain.data == "stream"
    with pytest.raises(ValueError, match=r"pretrain.nnodes=2 needs pretrain.rdzv_endpoint=host:port"):
        load_config("smoke", {"pretrain.nnodes": 2})
    two = load_config("smoke", {"pretrain.nnodes": 2, "pretrain.rdzv_endpoint": "10.0.0.5:29400"})
    # where the rendezvous is, and how often to checkpoint, change no result: not in the digest
    moved = load_config("smoke", {"pretrain.nnodes": 2, "pretrain.rdzv_endpoint": "10.0.0.6:29400",
                                  "pretrain.checkpoint_every": 50})
    assert two.digest("pretrain") == moved.digest("pretrain")
