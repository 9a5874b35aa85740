"""The `mm` command line, for the commands that need no pipeline run."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from flows.cli import app


def test_data_synth_writes_the_canonical_layout(tmp_path):
    out = tmp_path / "shapes"
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--images", "5", "--image-size", "32"])
    assert res.exit_code == 0, res.output
    lines = (out / "annotations.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and (out / json.loads(lines[0])["image"]).is_file()
    assert [json.loads(line)["split"] for line in lines] == ["train"] * 4 + ["test"]  # a third, rounded down


def test_pipeline_refuses_an_unknown_refresh_stage_before_running_anything():
    res = CliRunner().invoke(app, ["pipeline", "--preset", "smoke", "--refresh", "pretrian"])
    assert isinstance(res.exception, ValueError) and "Prefect API" not in res.output
    assert str(res.exception).startswith("--refresh names unknown stage(s) ['pretrian']")


def test_ingest_of_a_missing_dataset_says_how_to_get_one(harness, tmp_path):
    res = CliRunner().invoke(app, ["ingest", "--preset", "smoke", "--set", f"data_root={tmp_path}"])
    assert res.exit_code == 1 and isinstance(res.exception, FileNotFoundError)
    assert str(res.exception).startswith(f"{tmp_path / 'raw' / 'smoke'} does not exist")
    assert "mm data synth" in str(res.exception)


def _csv_dataset(root, missing: bool) -> None:
    from PIL import Image

    (root / "pics").mkdir(parents=True, exist_ok=True)
    rows = ["image,caption,lang"]
    for i in range(30):
        if not (missing and i == 7):
            Image.new("RGB", (40, 40), (i * 8, 100, 50)).save(root / f"pics/{i}.jpg", quality=95)
        rows += [f"pics/{i}.jpg,a photo number {i},en", f"pics/{i}.jpg,第{i}张照片,zh"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_ingest_reads_another_format_and_retries_rejected_records(harness, tmp_path):
    from mmcore.catalog import ProcessedDir
    from mmcore.data.dataset import read_manifest

    src = tmp_path / "src"
    _csv_dataset(src, missing=True)
    args = ["ingest", "--preset", "smoke", "--set", f"data_root={tmp_path}", "--source", str(src / "captions.csv"),
            "--workers", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "missing_file 1" in res.output
    out = ProcessedDir(next((tmp_path / "processed" / "smoke").iterdir()))
    first = read_manifest(out)
    assert (first["source"]["format"], first["records_in"], first["accepted"]) == ("csv", 30, 29)
    res = CliRunner().invoke(app, ["data", "rejects", *args[1:5], "--source", str(src / "captions.csv")])
    assert res.exit_code == 0, res.output
    assert "1 of 30 records rejected: missing_file 1" in res.output and "captions.csv line 16" in res.output

    _csv_dataset(src, missing=False)  # the file arrives
    res = CliRunner().invoke(app, [*args, "--retry-rejected"])
    assert res.exit_code == 0, res.output
    again = read_manifest(out)
    assert (again["accepted"], again["rejected"]) == (30, 0) and again["digest"] != first["digest"]
    # the table's row: records in, accepted, rejected, processed now, kept from earlier runs
    assert re.search(r"\b30\s*│\s*30\s*│\s*0\s*│\s*1\s*│\s*29\s*│", res.output), res.output


def test_fetch_and_ingest_easy_vqa_loses_nothing(harness, tmp_path):
    """The real easy-VQA data through the commands a user types: every image and question arrives."""
    from mmcore.catalog import ProcessedDir
    from mmcore.data.dataset import read_manifest

    res = CliRunner().invoke(app, ["data", "fetch", "easy-vqa", "--out", str(tmp_path / "raw" / "easy-vqa")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["ingest", "--dataset", "easy-vqa", "--set", f"data_root={tmp_path}",
                                   "--workers", "2"])
    assert res.exit_code == 0, res.output
    m = read_manifest(ProcessedDir(next((tmp_path / "processed" / "easy-vqa").iterdir())))
    assert m["source"]["format"] == "easy-vqa"
    assert (m["records_in"], m["accepted"], m["rejected"]) == (5000, 5000, 0)
    assert m["texts"]["questions"] == 38575 + 9673
    assert m["splits"]["test"] == 1000 and m["splits"]["train"] + m["splits"]["val"] == 4000
