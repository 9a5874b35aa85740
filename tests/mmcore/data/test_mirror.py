"""The working copy of an object-store folder: push and pull copy what changed, marks go last, and an
interrupted copy leaves no mark. Run against a local folder as the "store" and against a real
S3-compatible server (moto) started for this module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.fs as pafs
import pytest

from mmcore.data import mirror
from mmcore.data.storage import Storage
from tests.servers import aws_env, moto_server

BUCKET = "mm-mirror"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_server() as endpoint, aws_env(endpoint):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path: Path) -> Storage:
    if request.param == "folder":
        (tmp_path / "store").mkdir()
        return Storage(tmp_path / "store")
    request.getfixturevalue("s3")
    return Storage(f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}")


def make_folder(root: Path) -> Path:
    (root / "shards").mkdir(parents=True)
    for i in range(3):
        (root / "shards" / f"part-{i}.bin").write_bytes(os.urandom(1000 + i))
    (root / "manifest.json").write_text('{"rows": 3}')
    (root / ".manifest.json.x.tmp").write_text("half-written")  # a temporary file: never copied
    return root


def test_push_then_pull_round_trip_with_the_mark_last(store: Storage, tmp_path: Path):
    local = make_folder(tmp_path / "a")
    report = mirror.push(local, store, last=["manifest.json"])
    assert report.copied[-1] == "manifest.json" and len(report.copied) == 4
    assert store.files() == ["manifest.json", "shards/part-0.bin", "shards/part-1.bin", "shards/part-2.bin"]

    again = mirror.push(local, store, last=["manifest.json"])
    assert again.copied == [] and again.up_to_date == 4

    other = tmp_path / "b"
    pulled = mirror.pull(store, other, last=["manifest.json"])
    assert pulled.copied[-1] == "manifest.json" and pulled.bytes == report.bytes
    for rel in store.files():
        assert (other / rel).read_bytes() == (local / rel).read_bytes()
    assert not list(other.rglob(".*"))
    # what was pulled is not pushed back, and a second pull copies nothing
    assert mirror.push(other, store, last=["manifest.json"]).copied == []
    assert mirror.pull(store, other).copied == []


def test_a_changed_file_is_copied_and_the_mark_is_rewritten_after_it(store: Storage, tmp_path: Path):
    local = make_folder(tmp_path / "a")
    mirror.push(local, store, last=["manifest.json"])
    (local / "shards" / "part-1.bin").write_bytes(b"new content of another size")
    report = mirror.push(local, store, last=["manifest.json"])
    assert report.copied == ["shards/part-1.bin", "manifest.json"]  # the mark was taken down, then put back
    assert store.read_bytes("shards/part-1.bin") == b"new content of another size"
    assert store.read_bytes("manifest.json") == b'{"rows": 3}'


def test_pull_only_the_named_files(store: Storage, tmp_path: Path):
    mirror.push(make_folder(tmp_path / "a"), store)
    report = mirror.pull(store, tmp_path / "b", only=["manifest.json"])
    assert report.copied == ["manifest.json"]
    assert sorted(p.name for p in (tmp_path / "b").rglob("*")) == ["manifest.json"]


def test_an_interrupted_push_leaves_no_mark_and_a_rerun_completes_it(store: Storage, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    local = make_folder(tmp_path / "a")
    real_upload, calls = mirror._upload, []

    def failing_upload(path, remote, rel):
        calls.append(rel)
        if len(calls) == 3:
            raise OSError("connection reset")
        real_upload(path, remote, rel)

    monkeypatch.setattr(mirror, "_upload", failing_upload)
    with pytest.raises(OSError, match="connection reset"):
        mirror.push(local, store, last=["manifest.json"])
    assert "manifest.json" not in store.files()  # the folder does not look complete
    leftovers = store.fs.get_file_info(pafs.FileSelector(store.path(""), recursive=True))
    assert not [f.path for f in leftovers if ".tmp" in f.path]
    monkeypatch.setattr(mirror, "_upload", real_upload)
    report = mirror.push(local, store, last=["manifest.json"])
    assert report.copied == ["shards/part-2.bin", "manifest.json"] and report.up_to_date == 2


def test_pulling_a_missing_folder_copies_nothing(store: Storage, tmp_path: Path):
    assert mirror.pull(store.child("nothing/here"), tmp_path / "x").copied == []
    assert not (tmp_path / "x").exists()
