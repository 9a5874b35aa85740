"""End to end on the photos fixture through the command line: `mm data photos`, then `mm pipeline --preset photos`
(Karpathy splits, 224 px) with one epoch per model. Every record is accounted for, EXIF-rotated pictures are
stored upright, greyscale and CMYK ones as RGB, and the test metrics come with their baselines. The same files read
as VQA v2 keep every question's ten answers, and report the accuracy the official evaluation gives."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.slow

IMAGES = 48  # every stored form (EXIF-rotated, greyscale, CMYK) four times; 4 test pictures
FAST = ["pretrain.epochs=1", "heads.epochs=1", "heads.text_epochs=1", "heads.vqa_baseline_epochs=1"]


def _pipeline_on_photos(root: Path, dataset: str, sets: list[str]) -> str:
    """`mm data photos` into root/raw/<dataset>, then `mm pipeline --preset photos` on it; the CLI's output."""
    res = CliRunner().invoke(app, ["data", "photos", "--out", str(root / "raw" / dataset), "--images",
                                   str(IMAGES), "--seed", "0"])
    assert res.exit_code == 0, res.output
    sets = [f"data_root={root}", *sets]
    res = CliRunner().invoke(app, ["pipeline", "--preset", "photos", *(a for s in sets for a in ("--set", s))])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def photo_run(harness, tmp_path_factory: pytest.TempPathFactory):
    """(data root, the fixture's photos, the CLI's output) of one pipeline run."""
    from mmcore.data.photos import generate_photos

    root = tmp_path_factory.mktemp("photos")
    output = _pipeline_on_photos(root, "photos", FAST)
    photos = generate_photos(tmp_path_factory.mktemp("again"), IMAGES, seed=0).photos  # what each file shows
    return root, {p.file: p for p in photos}, output


def _config(root: Path):
    from mmcore.config import load_config

    return load_config("photos", {"data_root": str(root), **dict(s.split("=") for s in FAST)})


def test_every_record_is_read_through_its_karpathy_split(photo_run):
    from mmcore.catalog import Catalog
    from mmcore.data.dataset import read_manifest

    root, photos, _ = photo_run
    manifest = read_manifest(Catalog.from_config(_config(root)).processed)
    assert manifest["source"]["format"] == "karpathy"
    assert manifest["records_in"] == IMAGES == manifest["accepted"] + manifest["rejected"]
    assert manifest["rejected"] == 0, manifest["rejects_by_reason"]
    test = sum(p.split == "test" for p in photos.values())
    assert manifest["splits"]["test"] == test and manifest["splits"]["val"] >= 4  # Karpathy's val is kept


def _content_rows(size: tuple[int, int], side: int, resize: str) -> tuple[int, int]:
    """First and last row of the picture in a stored square (a letterbox pads a landscape picture above and below),
    a few rows in from the edge of the picture."""
    width, height = size
    if resize != "pad" or height >= width:
        return 2, side - 3
    shown = round(height * side / width)
    top = (side - shown) // 2
    return top + 3, top + shown - 4


def test_pictures_are_stored_square_upright_and_rgb(photo_run):
    from PIL import Image

    from mmcore.catalog import Catalog
    from mmcore.data.shards import read_tables

    root, photos, _ = photo_run
    cfg = _config(root)
    rows = read_tables(Catalog.from_config(cfg).processed.listed("samples")).to_pylist()
    assert len(rows) == IMAGES
    special = 0
    for row in rows:
        image = Image.open(io.BytesIO(row["image"]))
        assert (image.size, image.mode) == ((224, 224), "RGB")
        photo = photos[row["image_path"]]
        assert (row["width"], row["height"]) == photo.size  # as shown, i.e. after the EXIF orientation
        if photo.orientation == 1 and photo.mode == "RGB":
            continue
        special += 1
        pixels = np.asarray(image, dtype=np.float64)
        top, bottom = _content_rows(photo.size, 224, cfg.ingest.resize)
        sky, ground = (np.median(pixels[r, 10:-10], axis=0) for r in (top, bottom))
        # the sky is at the top and the ground at the bottom, in their colours (a greyscale picture in its greys)
        assert np.abs(sky - photo.sky).max() < 30 < np.abs(sky - photo.ground).max(), (photo, sky)
        assert np.abs(ground - photo.ground).max() < 30 < np.abs(ground - photo.sky).max(), (photo, ground)
        if photo.mode == "L":
            assert np.abs(pixels[top:bottom, :, 0] - pixels[top:bottom, :, 2]).max() <= 2  # grey stays grey
    assert special == 5 * IMAGES // 12  # three EXIF orientations, greyscale and CMYK, four of each


def test_metrics_come_with_their_baselines(photo_run):
    from mlflow.tracking import MlflowClient

    _, photos, output = photo_run
    client = MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name("photos").experiment_id], "tags.stage = 'pipeline'")
    metrics = parent.data.metrics
    for name in ("t2i_r1", "i2t_r1", "t2i_mean_rank", "caption_bleu4", "caption_cider_d", "generation_perplexity_en"):
        assert name in metrics and f"{name}_baseline" in metrics, name
    test = sum(p.split == "test" for p in photos.values())
    assert metrics["t2i_r1_baseline"] == pytest.approx(1 / test)  # a random ranking of the test pictures
    assert not any(k.startswith("vqa_") for k in metrics)  # Karpathy's file has captions only
    assert "Test-split metrics" in output and "caption_cider_d" in output


# The same fixture read as VQA v2: questions with ten human answers each, no captions. Pretraining is then
# through the VQA head (soft scores), and evaluation reports the official accuracy.
VQA_SETS = ["ingest.format=vqa", "dataset=photos-vqa", *FAST]


@pytest.fixture(scope="module")
def vqa_run(harness, tmp_path_factory: pytest.TempPathFactory):
    """(data root, the CLI's output) of one pipeline run over the fixture's VQA v2 files."""
    root = tmp_path_factory.mktemp("photos-vqa")
    return root, _pipeline_on_photos(root, "photos-vqa", VQA_SETS)


def test_vqa_v2_questions_keep_their_ten_answers_types_and_ids(vqa_run):
    from mmcore.catalog import Catalog
    from mmcore.config import load_config
    from mmcore.data.dataset import read_manifest
    from mmcore.data.shards import read_tables

    root, _ = vqa_run
    cfg = load_config("photos", {"data_root": str(root), **dict(s.split("=") for s in VQA_SETS)})
    processed = Catalog.from_config(cfg).processed
    manifest = read_manifest(processed)
    assert manifest["source"]["format"] == "vqa"
    assert manifest["records_in"] == IMAGES == manifest["accepted"] + manifest["rejected"]
    questions = {}
    for name in ("train", "val", "test"):
        doc = (root / "raw" / "photos-vqa" / "annotations" / f"v2_OpenEnded_mscoco_{name}2017_questions.json")
        questions.update({str(q["question_id"]): q["question"] for q in json.loads(doc.read_text())["questions"]})
    stored = [qa for row in read_tables(processed.listed("samples"), ["qa"]).to_pylist() for qa in row["qa"]]
    assert {qa["question_id"]: qa["question"] for qa in stored} == questions  # every question, once
    for qa in stored:
        assert len(qa["answers"]) == 10 and qa["answer_type"] in ("yes/no", "number", "other"), qa
        assert qa["question_type"] and qa["type"] == qa["answer_type"]


def test_vqa_v2_reports_the_official_accuracy(vqa_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from tests.reference.vqa_fixture import official_evaluation

    root, output = vqa_run
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("photos-vqa").experiment_id],
                                "tags.stage = 'evaluate'")
    metrics = run.data.metrics
    assert not any(k.startswith(("t2i_", "i2t_", "caption_")) for k in metrics)  # no captions in VQA v2
    results = Path(client.download_artifacts(run.info.run_id, "vqa_results.json", str(tmp_path)))
    annotations = root / "raw" / "photos-vqa" / "annotations"
    # the official evaluation of the logged answers, on the test split's own files (it asserts that the results
    # answer exactly the questions of the file)
    official = official_evaluation(annotations / "v2_mscoco_test2017_annotations.json",
                                   annotations / "v2_OpenEnded_mscoco_test2017_questions.json", results)
    mean = lambda values: float(sum(values)) / len(values)  # noqa: E731
    assert metrics["vqa_acc"] == pytest.approx(mean(official["overall"]), abs=1e-6)
    assert official["per_answer_type"]  # yes/no, number and other
    for kind, values in official["per_answer_type"].items():
        assert metrics[f"vqa_acc_at_{kind.replace('/', '_')}"] == pytest.approx(mean(values), abs=1e-6)
    for kind, values in official["per_question_type"].items():
        assert metrics[f"vqa_acc_qt_{kind.replace(' ', '_')}"] == pytest.approx(mean(values), abs=1e-6)
    assert "vqa_acc_baseline" in metrics and "vqa_acc" in output
