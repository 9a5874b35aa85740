"""Sources on S3, against a real S3-compatible server (moto) started for this module.

The same canonical dataset is ingested from a local folder and from `s3://mm-test/shapes`: the sample
shards must be byte-identical, whatever the number of workers.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import ingest
from mmcore.data.sources import SourceError, open_source
from mmcore.data.storage import OutsideRoot, Storage
from mmcore.data.synth import generate_shapes
from tests.servers import aws_env, moto_server

BUCKET = "mm-test"
CFG = IngestConfig(image_size=32, shard_size=16, min_side=16)


def upload(endpoint: str, bucket: str, local: Path, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}",
                              Body=path.read_bytes())


def make_dataset(root: Path, images: int) -> dict[str, str]:
    """generate_shapes plus one record whose image is missing and one outside the root; returns their reasons."""
    generate_shapes(root, images, seed=7, image_size=32)
    (root.parent / "outside.png").write_bytes((root / "images" / "000000.png").read_bytes())
    (root / ".hidden").write_bytes(b"not listed")
    bad = {"bad_missing": ("images/nope.png", "missing_file"), "bad_outside": ("../outside.png", "outside_root")}
    with open(root / "annotations.jsonl", "a", encoding="utf-8") as fh:
        for key, (image, _) in bad.items():
            fh.write(json.dumps({"id": key, "image": image, "captions": {"en": ["a red circle"]}}) + "\n")
    return {key: reason for key, (_, reason) in bad.items()}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """moto running, the AWS environment set, and the dataset under s3://mm-test/shapes and a local folder."""
    tmp = tmp_path_factory.mktemp("s3")
    root = tmp / "shapes"
    bad = make_dataset(root, 40)
    with moto_server() as endpoint, aws_env(endpoint):
        upload(endpoint, BUCKET, root, "shapes")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.put_object(Bucket=BUCKET, Key="outside.png", Body=(tmp / "outside.png").read_bytes())
        client.put_object(Bucket=BUCKET, Key="shapes-other/leak.txt", Body=b"another prefix")
        yield {"endpoint": endpoint, "root": root, "bad": bad, "tmp": tmp}


@pytest.fixture(scope="module")
def local_ingest(s3: dict) -> dict:
    out = ProcessedDir(s3["tmp"] / "out-local")
    report = ingest(open_source(s3["root"]), out, CFG, workers=1)
    return {"report": report, "out": out}


def test_storage_lists_and_reads_s3(s3: dict):
    root: Path = s3["root"]
    st = Storage(f"s3://{BUCKET}/shapes")
    assert not st.local
    local = Storage(root).files()
    assert len(local) == 41 and ".hidden" not in local
    assert st.files() == local  # same sorted relative paths; hidden files and the sibling prefix left out
    assert st.files(recursive=False) == ["annotations.jsonl"]
    assert st.is_dir() and st.is_dir("images") and st.is_file("annotations.jsonl") and not st.is_file("images")
    assert st.read_bytes("images/000003.png") == (root / "images" / "000003.png").read_bytes()
    assert Storage(f"s3://{BUCKET}/shapes/").files() == local
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/shapes/images/nope.png"):
        st.read_bytes("images/nope.png")
    with pytest.raises(OutsideRoot):
        st.read_bytes("../outside.png")  # the object exists in the bucket, but outside the root
    clone = pickle.loads(pickle.dumps(st))  # as sent to a worker process
    assert clone.read_bytes("annotations.jsonl") == (root / "annotations.jsonl").read_bytes()


def test_open_source_detects_jsonl_on_s3(s3: dict):
    src = open_source(f"s3://{BUCKET}/shapes")
    assert src.format == "jsonl"
    assert src.storage.uri == f"s3://{BUCKET}/shapes"
    assert len(list(src.records())) == 42
    by_file = open_source(f"s3://{BUCKET}/shapes/annotations.jsonl")  # a file: its folder is the root
    assert by_file.format == "jsonl" and by_file.storage.uri == f"s3://{BUCKET}/shapes"
    assert by_file.describe()["files"] == src.describe()["files"]


@pytest.mark.parametrize("uri", [f"s3://{BUCKET}/nothing-here", f"s3://{BUCKET}/shapes/nothing.jsonl"])
def test_missing_s3_location_is_a_clear_error(s3: dict, uri: str):
    with pytest.raises((SourceError, FileNotFoundError)) as info:
        open_source(uri)
    assert uri in str(info.value)


def _columns_without(table, drop: str) -> dict:
    return {name: table[name].to_pylist() for name in table.column_names if name != drop}


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_from_s3_matches_local(s3: dict, local_ingest: dict, workers: int):
    out = ProcessedDir(s3["tmp"] / f"out-s3-w{workers}")
    report = ingest(open_source(f"s3://{BUCKET}/shapes"), out, CFG, workers=workers)
    ref, ref_out = local_ingest["report"], local_ingest["out"]
    assert (ref.records_in, ref.accepted, ref.rejected) == (42, 40, 2)
    assert (report.records_in, report.accepted, report.rejected) == (ref.records_in, ref.accepted, ref.rejected)
    assert report.source["uri"] == f"s3://{BUCKET}/shapes" and report.source["files"] == ref.source["files"]

    indexes = list(out.shard_files("samples"))
    assert indexes == list(ref_out.shard_files("samples")) == [0, 1, 2]
    for index in indexes:
        assert out.samples(index).read_bytes() == ref_out.samples(index).read_bytes(), index

    # Rejections: the same rows, except that the message names where the file was looked for.
    s3_rejects = pq.read_table(list(out.shard_files("rejects").values()))
    local_rejects = pq.read_table(list(ref_out.shard_files("rejects").values()))
    assert _columns_without(s3_rejects, "message") == _columns_without(local_rejects, "message")
    rows = {r["sample_id"]: r for r in s3_rejects.to_pylist()}
    assert {k: r["reason"] for k, r in rows.items()} == s3["bad"]
    assert f"s3://{BUCKET}/shapes/images/nope.png" in rows["bad_missing"]["message"]
    assert rows["bad_outside"]["image_path"] == "../outside.png"


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_sample_shards_hold_no_location(s3: dict, local_ingest: dict):
    """What makes the shards of a local and an S3 ingest identical: no root, absolute path or URI in them."""
    out = local_ingest["out"]
    tables = [pq.read_table(p) for p in out.shard_files("samples").values()]
    assert sum(t.num_rows for t in tables) == 40
    roots = (str(s3["root"]), str(s3["tmp"]), "s3://", BUCKET)
    for table in tables:
        meta = b" ".join(v for v in (table.schema.metadata or {}).values()).decode()
        assert not any(r in meta for r in roots)
        for text in _strings(table.drop_columns(["image"]).to_pylist()):
            assert not text.startswith("/") and not any(r in text for r in roots), text
    assert {r["image_path"] for t in tables for r in t.to_pylist()} == {f"images/{i:06d}.png" for i in range(40)}


def test_workers_use_the_current_s3_environment(s3: dict, tmp_path: Path):
    # Make sure the forkserver is running, started (here or earlier) under some other environment.
    ingest(open_source(s3["root"]), ProcessedDir(tmp_path / "warm"), CFG, workers=2)
    root = tmp_path / "fresh"
    make_dataset(root, 4)
    with moto_server() as endpoint, aws_env(endpoint):  # a second server, with a bucket only it has
        upload(endpoint, "mm-fresh", root, "shapes")
        report = ingest(open_source("s3://mm-fresh/shapes"), ProcessedDir(tmp_path / "out"), CFG, workers=2)
    assert (report.accepted, report.rejected) == (4, 2)


def _embedded_sources(folder: Path) -> None:
    """The same 6 images as a Parquet table (image bytes column) and as a WebDataset tar."""
    import io
    import tarfile

    import pyarrow as pa
    from PIL import Image

    blobs = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (40 * i, 200, 90)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    (folder / "pq").mkdir(parents=True)
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(6)], "image": blobs,
                             "caption": [f"picture {i}" for i in range(6)]}), folder / "pq" / "part-0.parquet")
    (folder / "wds").mkdir()
    with tarfile.open(folder / "wds" / "shard-000.tar", "w") as tar:
        for i, blob in enumerate(blobs):
            for name, data in ((f"s{i}.png", blob), (f"s{i}.txt", f"picture {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(("prefix", "fmt"), [("pq", "parquet"), ("wds", "webdataset")])
def test_formats_with_embedded_images_read_from_s3(s3: dict, tmp_path: Path, prefix: str, fmt: str):
    local = s3["tmp"] / "embedded"
    if not local.exists():
        _embedded_sources(local)
        upload(s3["endpoint"], BUCKET, local, "embedded")
    source = open_source(f"s3://{BUCKET}/embedded/{prefix}")
    assert source.format == fmt  # detected over S3 (Parquet needs random access: it reads its footer first)
    report = ingest(source, ProcessedDir(tmp_path / "out"), CFG, workers=2)
    assert (report.records_in, report.accepted, report.rejected) == (6, 6, 0)
    local_report = ingest(open_source(local / prefix), ProcessedDir(tmp_path / "out-local"), CFG, workers=1)
    assert [Path(s.samples_path).read_bytes() for s in report.shards] == \
        [Path(s.samples_path).read_bytes() for s in local_report.shards]
