"""A pipeline whose data_root is an S3 bucket (a real S3-compatible server, moto, on 127.0.0.1): the raw
dataset is read from the bucket, every stage's shards and checkpoints land there with their completion
marks, and a stage run from an empty working copy (another machine) pulls its inputs from the bucket and
gets the same results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data import mirror
from mmcore.data.storage import Storage
from tests.servers import aws_env, moto_server

pytestmark = pytest.mark.slow

BUCKET = "mm-data"
ROOT = f"s3://{BUCKET}/pipelines"
SETS = {"data_root": ROOT, "pretrain.epochs": 1, "heads.epochs": 1, "heads.text_epochs": 1,
        "heads.vqa_baselines": False, "registry.model_name": "mmcore-s3"}


@pytest.fixture(scope="module")
def bucket(harness, shapes_raw: Path) -> Iterator[None]:
    with moto_server() as endpoint, aws_env(endpoint):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        mirror.push(shapes_raw, Storage(f"{ROOT}/raw/smoke"))
        yield


@pytest.fixture(scope="module")
def first(bucket, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Catalog]:
    from flows.pipeline import pipeline_flow

    cfg = load_config("smoke", {**SETS, "data_cache": str(tmp_path_factory.mktemp("cache-a"))})
    return pipeline_flow(cfg), Catalog.from_config(cfg)


def test_every_stage_writes_to_the_bucket(first):
    result, cat = first
    assert cat.root != Path(ROOT) and cat.remote_root == ROOT
    store = Storage(ROOT)
    files = store.files()
    for mark in (cat.processed.manifest, cat.features.manifest, cat.pretrain.encoder, cat.heads.heads):
        folder = mark.parent
        rel = folder.relative_to(cat.root).as_posix()
        mine = sorted(p.relative_to(cat.root).as_posix() for p in folder.rglob("*")
                      if p.is_file() and not p.name.startswith("."))
        assert f"{rel}/{mark.name}" in files
        assert [f for f in files if f.startswith(rel + "/")] == mine  # the bucket holds the whole folder
        assert store.read_bytes(f"{rel}/{mark.name}") == mark.read_bytes()
    assert not (cat.root / "raw").exists()  # the raw dataset was read from the bucket, not copied
    assert result["metrics"]["t2i_r1"] > 0


def test_a_stage_on_an_empty_working_copy_pulls_its_inputs_from_the_bucket(first, tmp_path: Path):
    from flows.evaluate import evaluate_flow

    result, cat = first
    cfg = load_config("smoke", {**SETS, "data_cache": str(tmp_path / "cache-b")})
    again = evaluate_flow(cfg, promote=False, refresh=True)  # evaluated again, here
    other = Catalog.from_config(cfg)
    assert other.heads.heads.read_bytes() == cat.heads.heads.read_bytes()
    assert sorted(p.name for p in other.pretrain.path.iterdir()) == ["encoder.pt"]  # not the resume checkpoint
    assert again["metrics"] == pytest.approx(result["metrics"], abs=1e-6)


def test_a_missing_raw_dataset_in_the_bucket_is_a_clear_error(bucket, tmp_path: Path):
    from flows.ingest import ingest_flow

    with pytest.raises(FileNotFoundError, match=f"{ROOT}/raw/nothing-here does not exist"):
        ingest_flow(load_config("smoke", {**SETS, "data_cache": str(tmp_path)}, dataset="nothing-here"))


def test_rejects_are_shown_from_the_bucket(first, tmp_path: Path):
    from typer.testing import CliRunner

    from flows.cli import app

    res = CliRunner().invoke(app, ["data", "rejects", "--preset", "smoke", "--set", f"data_root={ROOT}",
                                   "--set", f"data_cache={tmp_path}"])
    assert res.exit_code == 0, res.output
    manifest = json.loads(first[1].processed.manifest.read_text())
    assert f"{manifest['rejected']} of {manifest['records_in']} records rejected" in res.output
    assert (Catalog.from_config(load_config("smoke", {"data_root": ROOT, "data_cache": str(tmp_path)}))
            .processed.manifest).is_file()
