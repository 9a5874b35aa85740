"""Batch inference (mmcore/batch.py): inputs read by ingest's source readers, one row per input (an answer or a
rejection with its reason), answers equal to the predictor's own, per-shard resume, and the search index
extended without retraining."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmcore import batch as B
from mmcore.data import records as R
from mmcore.serving import Limits, load_predictor
from tests.mmcore.test_serving import full_bundle, png_header

MODEL = B.ModelRef("mmcore-test", "7", "digest-of-the-model")
LIMITS = Limits(max_rows=64, max_text_chars=60, max_image_bytes=200_000, max_image_pixels=1_000_000, max_k=3)


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory) -> Path:
    return full_bundle(tiny_bundle, tmp_path_factory.mktemp("batch-model"), LIMITS)


@pytest.fixture(scope="module")
def predictor(bundle):
    return load_predictor(bundle)


def _image(color, size=(40, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


GOOD = {f"good{i}.png": _image((20 * i, 200 - 10 * i, 90), (30 + 7 * i, 40)) for i in range(9)}
GOOD["photo.jpg"] = _image((10, 80, 200), (64, 48), "JPEG")
BAD = {  # name -> (bytes, the reason its row must carry)
    "cut.png": (GOOD["good1.png"][:70], R.TRUNCATED),
    "notes.png": (b"just some text, not a picture", R.UNDECODABLE),
    "empty.png": (b"", R.UNDECODABLE),
    "bomb.png": (png_header(20_000, 20_000), R.TOO_LARGE),  # a header claiming 400 million pixels
    "wide.png": (png_header(2_000, 600), R.TOO_LARGE),  # above the model's 1,000,000 pixels
}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    """A drop folder of good and bad images, with no captions."""
    root = tmp_path_factory.mktemp("inbox")
    for name, data in GOOD.items():
        (root / name).write_bytes(data)
    for name, (data, _) in BAD.items():
        (root / name).write_bytes(data)
    return root


def _run(predictor, uri, task, out, **kw) -> tuple[B.PredictReport, pa.Table]:
    options = {k: kw.pop(k) for k in ("fmt", "question") if k in kw}
    report = B.predict(predictor, B.read_requests(uri, task, **options), task, out, MODEL, **kw)
    return report, pq.read_table(out)


def test_a_folder_of_good_and_bad_images_gives_one_row_per_image(predictor, inbox, tmp_path):
    report, table = _run(predictor, inbox, "caption", tmp_path / "captions.parquet", shard_rows=4)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted([*GOOD, *BAD])  # rows in = rows answered + rows rejected
    assert (report.rows_in, report.answered, report.rejected) == (len(GOOD) + len(BAD), len(GOOD), len(BAD))
    assert table.column_names[:6] == ["id", "task", "answer", "score", "model_version", "model_digest"]
    for name, (_, reason) in BAD.items():
        assert (rows[name]["status"], rows[name]["reason"], rows[name]["answer"]) == ("rejected", reason, None)
        assert rows[name]["message"] and "\n" not in rows[name]["message"]
    assert "400000000 pixels" in rows["bomb.png"]["message"]
    # each answer is the predictor's own for that image
    names = sorted(GOOD)
    assert [rows[n]["answer"] for n in names] == predictor.caption([GOOD[n] for n in names])
    assert {(r["task"], r["model_version"], r["model_digest"]) for r in rows.values()} == {
        ("caption", "7", "digest-of-the-model")}
    assert report.rejects_by_reason == {R.TRUNCATED: 1, R.UNDECODABLE: 2, R.TOO_LARGE: 2}


def test_ask_takes_one_question_for_every_image_or_each_record_s_own(predictor, inbox, tmp_path):
    _, table = _run(predictor, inbox, "ask", tmp_path / "a.parquet", question="what color is the circle?")
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert len(ok) == len(GOOD) and all(0 <= r["score"] <= 1 for r in ok)
    want = predictor.answer([GOOD[r["id"]] for r in ok], ["what color is the circle?"] * len(ok))
    assert [(r["answer"], pytest.approx(r["score"], abs=1e-6)) for r in ok] == [(a, p) for a, p in want]

    # a Parquet table of images and questions (no answers): a row per question; one without a question
    images = [GOOD["good2.png"], GOOD["good3.png"], GOOD["good4.png"]]
    questions = ["how many shapes are there?", "what color is the circle?", None]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": images, "question": questions}), tmp_path / "q.parquet")
    _, table = _run(predictor, tmp_path / "q.parquet", "ask", tmp_path / "b.parquet")
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["a", "b", "c"] and [r["question"] for r in rows] == questions
    assert [r["answer"] for r in rows[:2]] == [a for a, _ in predictor.answer(images[:2], questions[:2])]
    assert (rows[2]["status"], rows[2]["reason"]) == ("rejected", B.NO_QUESTION)


def test_embed_gives_the_encoder_s_unit_vectors(predictor, inbox, tmp_path):
    from mmcore.data.shards import vectors_to_numpy

    _, table = _run(predictor, inbox, "embed", tmp_path / "e.parquet")
    ok = table.filter(pa.compute.equal(table["status"], "ok"))
    emb = vectors_to_numpy(ok["embedding"])
    pixels = torch.from_numpy(np.stack([predictor.pixels(GOOD[i]) for i in ok["id"].to_pylist()]))
    np.testing.assert_allclose(emb, predictor.embed_pixels(pixels), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert table.filter(pa.compute.equal(table["status"], "rejected"))["embedding"].null_count == len(BAD)


def test_search_reads_queries_from_a_text_file(predictor, tmp_path):
    queries = ["a red circle on the left", "", "two shapes", "x" * 61]
    (tmp_path / "q.txt").write_text("\n".join(queries) + "\n", encoding="utf-8")
    _, table = _run(predictor, tmp_path / "q.txt", "search", tmp_path / "s.parquet", k=2)
    rows = table.to_pylist()
    assert [r["text"] for r in rows] == [queries[0], queries[2], queries[3]]  # a blank line is no query
    expected = predictor.search([queries[0], queries[2]], 2)
    for row, found in zip(rows[:2], expected, strict=True):
        assert json.loads(row["matches"]) == [vars(m) for m in found] and row["answer"] == found[0].image_path
    assert (rows[2]["status"], rows[2]["reason"]) == ("rejected", R.TEXT_TOO_LONG)


KILLED_AFTER_TWO_SHARDS = """
import os, signal, sys
from pathlib import Path
from mmcore import batch as B
from mmcore.serving import load_predictor
lines = []
def log(line):
    lines.append(line)
    if len(lines) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # dies at once, as a killed worker does: no cleanup runs
B.predict(load_predictor(sys.argv[1]), B.read_requests(sys.argv[2], "caption"), "caption", Path(sys.argv[3]),
          B.ModelRef("mmcore-test", "7", "digest-of-the-model"), shard_rows=3, log=log)
"""


def test_a_killed_run_resumes_from_its_last_whole_shard(predictor, bundle, inbox, tmp_path):
    import signal
    import subprocess
    import sys

    whole, expected = _run(predictor, inbox, "caption", tmp_path / "whole.parquet", shard_rows=3)

    out = tmp_path / "killed.parquet"
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_TWO_SHARDS, str(bundle), str(inbox), str(out)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert not out.exists() and len(list(B.parts_folder(out).glob("*.parquet"))) == 2
    (B.parts_folder(out) / ".leftover.parquet.tmp").write_bytes(b"half a file")  # a write the kill interrupted

    report, table = _run(predictor, inbox, "caption", out, shard_rows=3)
    assert (report.shards, report.shards_reused) == (whole.shards, 2)
    assert table.equals(expected)

    # a damaged part is computed again, not trusted
    part = sorted(B.parts_folder(out).glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    report, table = _run(predictor, inbox, "caption", out, shard_rows=3)
    assert report.shards_reused == whole.shards - 1 and table.equals(expected)


def test_a_drop_folder_scored_again_computes_only_what_changed(predictor, inbox, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    for name in sorted(GOOD)[:6]:
        (folder / name).write_bytes(GOOD[name])
    out = tmp_path / "drop.parquet"
    first, _ = _run(predictor, folder, "caption", out, shard_rows=3)
    assert (first.shards, first.shards_reused) == (2, 0)
    (folder / "zz-new.png").write_bytes(GOOD["photo.jpg"])  # sorts last: only a new shard
    again, table = _run(predictor, folder, "caption", out, shard_rows=3)
    assert (again.shards, again.shards_reused, table.num_rows) == (3, 2, 7)
    (folder / sorted(GOOD)[0]).write_bytes(GOOD["good8.png"])  # an image replaced under the same name
    third, _ = _run(predictor, folder, "caption", out, shard_rows=3)
    assert third.shards_reused == 2
    assert len(list(B.parts_folder(out).glob("*.parquet"))) == 3  # parts no longer named are removed


def test_bad_options_are_one_line_errors(predictor, inbox, tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'tag'; batch inference does caption, ask, embed, search"):
        B.read_requests(inbox, "tag")
    with pytest.raises(ValueError, match="--question is for the ask task"):
        B.read_requests(inbox, "caption", question="why?")
    with pytest.raises(ValueError, match=r"must name a Parquet file \(ending in .parquet\)"):
        B.predict(predictor, B.read_requests(inbox, "caption"), "caption", tmp_path / "out.csv", MODEL)
    with pytest.raises(ValueError, match="does not exist"):
        B.read_requests(tmp_path / "nowhere", "caption")


def test_an_empty_drop_folder_gives_an_empty_table(predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    report, table = _run(predictor, tmp_path / "empty", "caption", tmp_path / "none.parquet")
    assert report.rows_in == 0 and table.num_rows == 0 and table.schema.equals(B.output_schema("caption", 16))


def test_inputs_in_an_object_store_give_the_same_rows_as_a_local_folder(predictor, inbox, tmp_path):
    import boto3

    from tests.servers import aws_env, moto_server

    _, local = _run(predictor, inbox, "caption", tmp_path / "local.parquet")
    with moto_server() as endpoint, aws_env(endpoint):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="inbox")
        for path in sorted(inbox.iterdir()):
            s3.put_object(Bucket="inbox", Key=f"drop/{path.name}", Body=path.read_bytes())
        report, remote = _run(predictor, "s3://inbox/drop", "caption", tmp_path / "remote.parquet")
    assert report.rows_in == len(GOOD) + len(BAD)
    assert remote.drop(["where"]).equals(local.drop(["where"]))
