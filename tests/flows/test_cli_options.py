"""What the `mm` commands share: their options resolved into one config, a bad option as a one-line error,
and the metrics table."""

from __future__ import annotations

import pytest

from flows.cli_options import console, print_metrics, refresh_stages, resolve
from mmcore.config import load_config


def test_options_resolve_into_one_config():
    cfg = resolve("smoke", None, ["pretrain.epochs=3", "dataset = coco", "heads.vqa_baselines=false"])
    assert cfg == load_config("smoke", {"pretrain.epochs": 3, "heads.vqa_baselines": False}, dataset="coco")
    assert (cfg.pretrain.epochs, cfg.dataset, cfg.heads.vqa_baselines, cfg.preset) == (3, "coco", False, None)
    assert resolve("smoke", "qa-only", None).dataset == "qa-only"  # --dataset overrides the preset's
    source = resolve("smoke", None, None, "s3://bucket/captions.csv", "csv")
    assert (source.ingest.source, source.ingest.format) == ("s3://bucket/captions.csv", "csv")
    assert resolve("smoke", None, None) == load_config("smoke")


@pytest.mark.parametrize(("args", "says"), [
    (("smoke", None, ["pretrain.epochs"]), "--set expects key=value, got 'pretrain.epochs'"),
    (("smoke", None, ["=3"]), "--set expects key=value, got '=3'"),
    (("smok", None, None), "unknown preset 'smok'; choose one of"),
    (("smoke", None, ["pretrain.epoch=3"]), "pretrain.epoch is not a setting; valid keys here: epochs"),
    (("smoke", "no/slashes", None), "dataset: String should match pattern"),
])
def test_a_bad_option_is_a_one_line_value_error(args, says):
    with pytest.raises(ValueError) as exc:
        resolve(*args)
    assert says in str(exc.value) and "\n" not in str(exc.value)  # `mm` prints it as one line


def test_refresh_names_every_cached_stage_for_all_and_refuses_others():
    assert refresh_stages(["all"]) == ["pretrain", "extract", "train", "evaluate"]
    assert refresh_stages(["train"]) == ["train"] and refresh_stages(None) == []
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian'\]; choose from"):
        refresh_stages(["trian"])


def test_metrics_table_shows_headline_metrics_with_baselines():
    with console.capture() as captured:
        print_metrics({"t2i_r1": 0.25, "t2i_r1_baseline": 0.0125, "vqa_acc": 0.5, "records_in": 60})
    rows = [line for line in captured.get().splitlines() if "t2i_r1" in line or "vqa_acc" in line]
    assert [line.replace("│", " ").split() for line in rows] == [["t2i_r1", "0.2500", "0.0125"],
                                                                  ["vqa_acc", "0.5000"]]
    assert "records_in" not in captured.get()
