"""The extract stage: one feature shard per sample shard, kept while it reads and its inputs match, and its
inputs; corrupt shards and manifests are written again with a warning, a corrupt encoder is one error."""

from __future__ import annotations

import warnings

import pytest

from mmcore import integrity
from mmcore.catalog import parse_shard_name
from mmcore.data.dataset import read_manifest
from mmcore.integrity import CorruptOutput, CorruptOutputWarning
from mmcore.io import file_sha256
from mmcore.stages import extract
from tests.mmcore.stages.corruptkit import Lines, truncate
from tests.mmcore.stages.stagekit import copy_run


def test_one_feature_shard_per_sample_shard_with_the_same_index(smoke_stages):
    cfg, cat, run = smoke_stages
    indexes = extract.shard_indexes(cat)
    assert indexes == [parse_shard_name(s["samples"])[1] for s in read_manifest(cat.processed)["shards"]]
    assert run.extract.shards == len(indexes) and run.extract.reused == 0
    assert cat.features.listed() == [cat.features.shard(i) for i in indexes]
    assert run.extract.outputs == {cat.features.manifest: file_sha256(cat.features.manifest),
                                   **{p: file_sha256(p) for p in cat.features.listed()}}


def test_a_shard_is_kept_while_its_inputs_match_and_the_clock_sees_each_piece(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    first = extract.shard_indexes(cat)[0]
    kept = extract.extract_shard(cfg, cat, first)
    assert kept.reused and kept.path == cat.features.shard(first) and kept.rows == 40
    assert kept.outputs == {kept.path: file_sha256(kept.path)}
    before = cat.features.shard(first).read_bytes()
    cat.features.shard(first).unlink()
    pieces: dict[str, float] = {}
    made = extract.extract_shard(cfg, cat, first, clock=lambda name, s: pieces.__setitem__(name, s))
    assert not made.reused and cat.features.shard(first).read_bytes() == before  # the same bytes again
    assert set(pieces) == {"hash_input", "read_parquet", "decode_png", "image_forward", "convert_outputs",
                           "pad_captions", "text_forward", "write_parquet"}
    result = extract.finish(cfg, cat, [made])
    assert (result.shards, result.rows, result.reused) == (1, 40, 0)


def test_each_shard_has_its_own_inputs(smoke_stages):
    cfg, cat, _ = smoke_stages
    a, b = (extract.shard_inputs(cat, i) for i in extract.shard_indexes(cat))
    assert a["encoder"] == b["encoder"] == smoke_stages[2].pretrain.encoder_sha256
    assert a["samples"] != b["samples"] and a["out"] != b["out"]


def _rerun(smoke_stages, tmp_path):
    """A copy of the session's data root with the extract stage run once more in it (every shard kept, the
    manifest written for this location): (cfg, cat, the manifest's and each shard's bytes)."""
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    result = extract.run(cfg, cat)
    assert result.reused == result.shards == 2
    return cfg, cat, {path: path.read_bytes() for path in result.outputs}


def test_a_truncated_shard_is_extracted_again_with_a_warning(smoke_stages, tmp_path):
    cfg, cat, good = _rerun(smoke_stages, tmp_path)
    shard = cat.features.shard(extract.shard_indexes(cat)[1])
    truncate(shard)
    hooks = Lines()
    with pytest.warns(CorruptOutputWarning, match=rf"{shard} is corrupt \(ArrowInvalid: .*\): extracting it again"):
        result = extract.run(cfg, cat, hooks)
    assert hooks.warnings() == [f"warning: {shard} is corrupt (ArrowInvalid: Parquet magic bytes not found in footer): "
                                "extracting it again"]
    assert (result.reused, result.digest) == (1, smoke_stages[2].extract.digest)
    assert {path: path.read_bytes() for path in result.outputs} == good  # byte for byte


def test_refresh_writes_every_shard_again_without_reading_them(smoke_stages, tmp_path, monkeypatch):
    cfg, cat, good = _rerun(smoke_stages, tmp_path)
    for path in good:
        truncate(path)
    def never(*args):
        pytest.fail("a fresh extract read an output it replaces")
    for name in ("problem", "parquet_problem", "json_problem"):
        monkeypatch.setattr(integrity, name, never)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptOutputWarning)
        result = extract.run(cfg, cat, fresh=True)
    assert result.reused == 0
    assert {path: path.read_bytes() for path in result.outputs} == good


def test_a_truncated_manifest_is_written_again_with_a_warning(smoke_stages, tmp_path):
    cfg, cat, good = _rerun(smoke_stages, tmp_path)
    truncate(cat.features.manifest)
    with pytest.raises(CorruptOutput, match=r"manifest.json is corrupt \(JSONDecodeError: .*--refresh extract\)$"):
        cat.require("extract")
    hooks = Lines()
    with pytest.warns(CorruptOutputWarning, match=rf"{cat.features.manifest} is corrupt \(JSONDecodeError: "):
        result = extract.run(cfg, cat, hooks)
    assert hooks.warnings()[0].endswith("): writing it again") and len(hooks.warnings()) == 1
    assert result.reused == 2 and {path: path.read_bytes() for path in result.outputs} == good


def test_a_truncated_encoder_is_one_error_naming_it_before_any_shard(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    truncate(cat.pretrain.encoder)
    shards = {path: path.stat().st_mtime_ns for path in cat.features.listed()}
    for check in (lambda: extract.run(cfg, cat), lambda: cat.require("pretrain")):
        with pytest.raises(CorruptOutput) as err:
            check()
        assert str(err.value).startswith(f"{cat.pretrain.encoder} is corrupt (torch.load fails on its ")
        assert str(err.value).endswith(": run the pretrain stage again (--refresh pretrain)")
        assert "\n" not in str(err.value)
        assert err.value.__context__ is None or err.value.__suppress_context__  # no torch traceback above it
    assert {path: path.stat().st_mtime_ns for path in cat.features.listed()} == shards
