"""mmcore.integrity: how each kind of output is checked, and the one-line errors and warnings it gives."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmcore import integrity
from mmcore.integrity import CorruptOutput, CorruptOutputWarning
from mmcore.io import file_sha256, save_torch
from tests.mmcore.stages.corruptkit import truncate


@pytest.fixture()
def files(tmp_path):
    """One intact file of each kind the pipeline writes."""
    pq.write_table(pa.table({"x": list(range(100))}), tmp_path / "a.parquet")
    save_torch({"w": torch.arange(100.0), "n": 3}, tmp_path / "a.pt")
    (tmp_path / "a.json").write_text(json.dumps({"shards": list(range(20))}))
    (tmp_path / "a.txt").write_text("any bytes")
    return {kind: tmp_path / f"a.{kind}" for kind in ("parquet", "pt", "json", "txt")}


def test_intact_files_pass_by_kind_and_by_digest(files):
    for path in files.values():
        assert integrity.problem(path) is None
        assert integrity.problem(path, file_sha256(path)) is None
    assert integrity.problems({p: file_sha256(p) for p in files.values()}) == {}
    assert integrity.problems(list(files.values())) == {}


def test_truncated_files_fail_by_kind_and_by_digest(files, tmp_path):
    recorded = {p: file_sha256(p) for p in files.values()}
    for path in files.values():
        truncate(path)
    assert "magic bytes not found in footer" in integrity.problem(files["parquet"])
    assert "zip archive" in integrity.problem(files["pt"])
    assert integrity.problem(files["json"]).startswith("JSONDecodeError")
    assert integrity.problem(files["txt"]) is None  # a kind with no check only needs to be there
    found = integrity.problems(recorded)
    assert set(found) == set(files.values())  # with a recorded sha256 every kind is checked
    assert all(why.startswith("sha256 ") and "is not the recorded" in why for why in found.values())
    assert integrity.problem(tmp_path / "gone.pt") == "missing"


def test_load_torch_names_the_file_and_the_stage_in_one_line(files, tmp_path):
    assert integrity.load_torch(files["pt"])["n"] == 3
    truncate(files["pt"])
    with pytest.raises(CorruptOutput) as err:
        integrity.load_torch(files["pt"], "pretrain")
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None and err.value.__suppress_context__
    assert message.startswith(f"{files['pt']} is corrupt (torch.load fails on its ")
    assert message.endswith(": run the pretrain stage again (--refresh pretrain)")
    assert (err.value.path, err.value.stage) == (files["pt"], "pretrain")
    with pytest.raises(FileNotFoundError, match="gone.pt does not exist: run the train stage first"):
        integrity.load_torch(tmp_path / "gone.pt", "train")


def test_require_intact_raises_for_the_first_bad_file(files, tmp_path):
    recorded = {files["parquet"]: file_sha256(files["parquet"]), tmp_path / "gone.parquet": "0" * 64}
    with pytest.raises(FileNotFoundError, match=r"gone.parquet does not exist: .*\(--refresh extract\)"):
        integrity.require_intact(recorded, "extract")
    truncate(files["parquet"])
    with pytest.raises(CorruptOutput, match=r"a.parquet is corrupt \(sha256 .*\): run the extract stage again"):
        integrity.require_intact(recorded, "extract")


def test_read_json_and_the_warning_category(files):
    truncate(files["json"])
    with pytest.raises(CorruptOutput, match=r"a.json is corrupt \(JSONDecodeError: .*--refresh extract\)$"):
        integrity.read_json(files["json"], "extract")
    with pytest.warns(CorruptOutputWarning, match="rebuilding it"):
        integrity.warn(f"{files['json']} is corrupt: rebuilding it")
