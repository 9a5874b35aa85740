"""plan_ingest: which records need processing, cut into shards in a staging folder beside the dataset;
the plan round-trips through plan.json for shard tasks elsewhere."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import IngestPlan, ShardWork, ingest, plan_ingest
from mmcore.data.ingest.decode import key64
from mmcore.data.records import ANNOTATIONS, DUPLICATE
from mmcore.data.sources import open_source
from tests.mmcore.data.ingest.ingestkit import write_numbered

CFG = IngestConfig(image_size=16, shard_size=10, min_side=8, vocab_size=64)


def test_a_first_plan_cuts_every_record_into_shards_in_the_staging_folder(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "data" / "out")
    write_numbered(root, range(25))
    plan = plan_ingest(open_source(root), out, CFG)
    assert (plan.records_in, plan.kept, plan.processed, plan.uri) == (25, 0, out, str(root))
    assert [(w.index, w.records) for w in plan.work] == [(0, 10), (1, 10), (2, 5)]
    stage = out.staging / Path(plan.stage).name
    assert plan.stage == str(stage) and out.staging == tmp_path / "data" / ".out.staging"
    assert sorted(p.name for p in stage.iterdir()) == [
        "ledger.pkl", "plan.json", "work-00000.pkl", "work-00001.pkl", "work-00002.pkl"]
    assert list(out.path.iterdir()) == []  # nothing in the dataset folder itself
    with open(plan.work[2].path, "rb") as fh:
        items = pickle.load(fh)
    assert [(rec.number, rec.key, key, problem) for rec, key, problem in items] == [
        (n, f"img{n - 1}", f"img{n - 1}", None) for n in range(21, 26)]
    assert plan.changes


def test_the_plan_round_trips_through_its_file(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(12))
    plan = plan_ingest(open_source(root), out, CFG.model_copy(update={"shard_size": 5}))
    saved = json.loads((tmp_path / ".out.staging" / Path(plan.stage).name / "plan.json").read_text())
    assert saved["processed"] == str(out.path) and saved["records_in"] == 12
    loaded = IngestPlan.load(plan.path)
    assert loaded == plan and loaded.processed == out  # the folder comes back as a ProcessedDir
    assert loaded.work == [ShardWork(0, 5, plan.work[0].path), ShardWork(1, 5, plan.work[1].path),
                           ShardWork(2, 2, plan.work[2].path)]


def test_a_repeated_key_is_planned_as_a_duplicate_of_its_first_record(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(3))
    with open(root / ANNOTATIONS, "a", encoding="utf-8") as fh:
        fh.write('{"id": "img1", "image": "images/2.png", "captions": {"en": ["again"]}}\n' * 2)
    plan = plan_ingest(open_source(root), out, CFG)
    with open(plan.work[0].path, "rb") as fh:
        items = pickle.load(fh)
    assert [(key, problem and problem.reason) for _, key, problem in items] == [
        ("img0", None), ("img1", None), ("img2", None), ("img1#2", DUPLICATE), ("img1#3", DUPLICATE)]
    assert items[4][2].message == "key 'img1' repeats record 2 of the source"


def test_a_rerun_plans_only_new_and_edited_records_after_the_last_shard(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(25))
    ingest(open_source(root), out, CFG)
    unchanged = plan_ingest(open_source(root), out, CFG)
    assert (unchanged.records_in, unchanged.kept, unchanged.work, unchanged.changes) == (25, 25, [], False)

    write_numbered(root, range(30))
    text = (root / ANNOTATIONS).read_text(encoding="utf-8").replace('"image 3"', '"image three"')
    (root / ANNOTATIONS).write_text(text, encoding="utf-8")
    grown = plan_ingest(open_source(root), out, CFG)
    assert (grown.records_in, grown.kept) == (30, 24)
    assert [(w.index, w.records) for w in grown.work] == [(3, 6)]
    assert grown.ledger().drop == {0: {key64("img3")}}  # the edited record's old row goes
    assert grown.changes


def test_a_plan_removes_the_staging_folders_of_killed_runs(tmp_path):
    root, out = tmp_path / "raw", ProcessedDir(tmp_path / "out")
    write_numbered(root, range(2))
    (out.staging / "killed-run").mkdir(parents=True)
    plan = plan_ingest(open_source(root), out, CFG)
    assert [p.name for p in out.staging.iterdir()] == [Path(plan.stage).name]
