"""The extract stage: one feature shard per sample shard, kept while its inputs match, and its inputs."""

from __future__ import annotations

from mmcore.catalog import parse_shard_name
from mmcore.data.dataset import read_manifest
from mmcore.stages import extract
from tests.mmcore.stages.stagekit import copy_run


def test_one_feature_shard_per_sample_shard_with_the_same_index(smoke_stages):
    cfg, cat, run = smoke_stages
    indexes = extract.shard_indexes(cat)
    assert indexes == [parse_shard_name(s["samples"])[1] for s in read_manifest(cat.processed)["shards"]]
    assert run.extract.shards == len(indexes) and run.extract.reused == 0
    assert cat.features.listed() == [cat.features.shard(i) for i in indexes]
    assert run.extract.outputs == [cat.features.manifest]


def test_a_shard_is_kept_while_its_inputs_match_and_the_clock_sees_each_piece(smoke_stages, tmp_path):
    cfg, cat = copy_run(smoke_stages, tmp_path / "data")
    first = extract.shard_indexes(cat)[0]
    kept = extract.extract_shard(cfg, cat, first)
    assert kept.reused and kept.path == cat.features.shard(first) and kept.rows == 40
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
