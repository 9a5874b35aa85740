"""The catalog: every location and file name of a run, from the config."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcore.catalog import Catalog, parse_shard_name, shard_name
from mmcore.config import load_config
from mmcore.integrity import CorruptOutput
from mmcore.io import file_sha256, save_torch
from tests.mmcore.stages.corruptkit import truncate


def test_locations_follow_the_config_sections_each_stage_depends_on(tmp_path):
    base = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path)}))
    heads = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path), "heads.epochs": 9}))
    assert base.processed.path == tmp_path / "processed" / "smoke" / base.ingest_key
    assert heads.processed == base.processed and heads.pretrain == base.pretrain and heads.features == base.features
    assert heads.heads != base.heads
    encoder = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path), "encoder.embed_dim": 16}))
    assert encoder.processed == base.processed and encoder.pretrain != base.pretrain
    assert base.pretrain.encoder.name == "encoder.pt" and base.pretrain.encoder.parent == base.pretrain.path


def test_shard_names_round_trip_and_other_files_are_not_shards():
    assert shard_name("samples", 12) == "samples-00012.parquet"
    assert parse_shard_name("features-00003.parquet") == ("features", 3)
    assert parse_shard_name("samples-123456.parquet") == ("samples", 123456)
    assert parse_shard_name("manifest.json") is None and parse_shard_name("samples-1.parquet") is None
    with pytest.raises(ValueError, match="valid: samples, tokens, rejects, features"):
        shard_name("images", 0)


def test_sibling_shards_share_an_index(tmp_path):
    cat = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path)}))
    p = cat.processed
    assert {p.samples(4).name, p.tokens(4).name, p.rejects(4).name, cat.features.shard(4).name} == {
        "samples-00004.parquet", "tokens-00004.parquet", "rejects-00004.parquet", "features-00004.parquet"}
    p.path.mkdir(parents=True)
    for path in (p.samples(2), p.samples(0), p.tokens(0), p.path / "samples-x.parquet"):
        path.touch()
    assert p.shard_files("samples") == {0: p.samples(0), 2: p.samples(2)}


def test_require_names_the_stage_to_run_or_to_run_again(tmp_path):
    cat = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match="run the pretrain stage first"):
        cat.require("pretrain")
    cat.pretrain.path.mkdir(parents=True)
    cat.pretrain.encoder.touch()  # an empty file: a copy killed before its first byte
    with pytest.raises(CorruptOutput, match=r"encoder.pt is corrupt \(.*\): .*\(--refresh pretrain\)$"):
        cat.require("pretrain")
    save_torch({"model": {}}, cat.pretrain.encoder)
    assert cat.require("pretrain") == cat.pretrain.encoder
    cat.features.path.mkdir(parents=True)
    cat.features.manifest.write_text('{"shards": [')
    with pytest.raises(CorruptOutput, match=r"manifest.json is corrupt \(JSONDecodeError.*--refresh extract\)$"):
        cat.require("extract")
    with pytest.raises(ValueError, match="valid: ingest, pretrain, extract, train"):
        cat.require("register")


def _features(cat: Catalog) -> list[Path]:
    """Two feature shards and the manifest that records their digests."""
    cat.features.path.mkdir(parents=True)
    shards = [cat.features.shard(i) for i in (0, 1)]
    for i, path in enumerate(shards):
        pq.write_table(pa.table({"sample_id": [f"s{i}-{j}" for j in range(50)]}), path)
    listed = [{"path": p.name, "rows": 50, "sha256": file_sha256(p)} for p in shards]
    cat.features.manifest.write_text(json.dumps({"shards": listed, "digest": "d"}))
    return shards


def test_verify_checks_every_feature_shard_against_its_manifest(tmp_path):
    cat = Catalog.from_config(load_config("smoke", {"data_root": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match="run the extract stage first"):
        cat.features.verify()
    shards = _features(cat)
    assert cat.features.verify() == shards == cat.features.listed()
    assert cat.features.recorded() == {p: file_sha256(p) for p in shards}
    truncate(shards[1])
    with pytest.raises(CorruptOutput, match=r"features-00001.parquet is corrupt \(sha256 .*--refresh extract\)$"):
        cat.features.verify()
    shards[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"features-00000.parquet does not exist: .*--refresh extract"):
        cat.features.verify()
    truncate(cat.features.manifest)
    for read in (cat.features.verify, cat.features.listed, cat.features.digest):
        with pytest.raises(CorruptOutput, match=r"manifest.json is corrupt .*--refresh extract\)$"):
            read()
    cat.features.manifest.write_text("[]")
    with pytest.raises(CorruptOutput, match=r"manifest.json is corrupt \(not a features manifest\)"):
        cat.features.listed()


def test_a_bucket_root_has_a_local_working_copy_and_the_catalog_travels_as_json(tmp_path):
    cfg = load_config("smoke", {"data_root": "s3://bucket/prefix/", "data_cache": str(tmp_path / "copy")})
    cat = Catalog.from_config(cfg)
    assert cat.root == tmp_path / "copy" and cat.remote_root == "s3://bucket/prefix"
    assert cat.remote_of(cat.features) == f"s3://bucket/prefix/features/smoke/{cat.pretrain_key}"
    assert cat.raw_uri == "s3://bucket/prefix/raw/smoke"
    assert Catalog.from_json(cat.to_json()) == cat
    assert Catalog.raw_root("data", "coco") == Path("data/raw/coco")
