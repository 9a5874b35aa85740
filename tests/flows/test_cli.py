"""The `mm` command line, for the commands that need no pipeline run."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from flows.cli import _overrides, app


def test_data_synth_writes_the_canonical_layout(tmp_path):
    out = tmp_path / "shapes"
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--images", "5", "--image-size", "32"])
    assert res.exit_code == 0, res.output
    lines = (out / "annotations.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and (out / json.loads(lines[0])["image"]).is_file()


def test_set_options_become_dotted_overrides():
    assert _overrides(["pretrain.epochs=3", "dataset = coco"]) == {"pretrain.epochs": "3", "dataset": "coco"}
    assert _overrides(None) is None
    with pytest.raises(typer.BadParameter, match="key=value"):
        _overrides(["pretrain.epochs"])


def test_ingest_of_a_missing_dataset_says_how_to_get_one(harness, tmp_path):
    res = CliRunner().invoke(app, ["ingest", "--preset", "smoke", "--set", f"data_root={tmp_path}"])
    assert res.exit_code != 0
    assert "mm data synth" in str(res.exception)
