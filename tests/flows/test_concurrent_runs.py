"""Two pipeline runs on one dataset, started at once as separate processes (`mm pipeline` twice) against
one Prefect API and one MLflow store: both finish, the shards are what a single run writes, nothing
half-written is left, and MLflow holds two complete run trees and a consistent model registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "mmcore-concurrent"  # its own registered model: other tests of the session register mmcore-smoke
SETS = {"pretrain.epochs": 1, "heads.epochs": 1, "heads.text_epochs": 1, "heads.vqa_baselines": False,
        "registry.model_name": MODEL}
STAGES = ["evaluate", "extract", "ingest", "pretrain", "train"]


@pytest.fixture(scope="module")
def two_runs(harness, mm_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """Both runs' exit codes and output, the data root, and how long they took together."""
    from mlflow.tracking import MlflowClient
    from prefect.settings import PREFECT_API_URL

    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("concurrent")
    generate_shapes(root / "raw" / "smoke", 80, seed=2, image_size=32)
    MlflowClient().search_experiments()  # the store exists (schema created) before the two writers start
    env = {**os.environ, "MM_HOME": str(mm_home), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PYTHONPATH": str(REPO)}
    sets = [arg for key, value in {"data_root": str(root), **SETS}.items() for arg in ("--set", f"{key}={value}")]
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--preset", "smoke", *sets]
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:  # stop what this test started, also when it times out
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs, root, time.perf_counter() - started


def test_both_runs_finish(two_runs):
    codes, outputs, _, seconds = two_runs
    print(f"two concurrent pipeline runs: {seconds:.1f} s")
    assert codes == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
    assert not any("database is locked" in o for o in outputs)


def test_shards_are_those_of_a_single_run_and_nothing_is_left_half_written(two_runs, tmp_path):
    from mmcore.catalog import Catalog, ProcessedDir
    from mmcore.config import load_config
    from mmcore.data.dataset import read_manifest
    from mmcore.data.ingest import ingest
    from mmcore.data.shards import read_metadata
    from mmcore.data.sources import open_source
    from mmcore.io import file_sha256

    _, _, root, _ = two_runs
    cfg = load_config("smoke", {"data_root": str(root), **SETS})
    cat = Catalog.from_config(cfg)
    manifest = read_manifest(cat.processed)
    assert manifest["records_in"] == manifest["accepted"] + manifest["rejected"] == 80
    for shard in manifest["shards"]:
        assert file_sha256(cat.processed.path / shard["samples"]) == shard["samples_sha256"]
        assert file_sha256(cat.processed.path / shard["tokens"]) == shard["tokens_sha256"]
    single = ingest(open_source(cat.raw), ProcessedDir(tmp_path / "single"), cfg.ingest)  # the same ingest, alone
    names = sorted(p.name for p in cat.processed.path.glob("*-*.parquet") if not p.name.startswith("tokens-"))
    assert names == sorted(p.name for p in (tmp_path / "single").glob("*.parquet"))
    for name in names:
        assert (cat.processed.path / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    assert [s.accepted for s in single.shards] == [s["rows"] for s in manifest["shards"]]
    features = json.loads(cat.features.manifest.read_text())
    assert features["rows"] == manifest["accepted"] and features["processed_digest"] == manifest["digest"]
    assert len(cat.features.listed()) == len(manifest["shards"])
    assert sorted(cat.features.path.glob("features-*.parquet")) == sorted(cat.features.listed())
    # both pretrain runs shared one checkpoint folder: the encoder, its features and their manifest agree
    encoder = file_sha256(cat.pretrain.encoder)
    assert features["encoder_sha256"] == encoder
    for shard, path in zip(features["shards"], cat.features.listed(), strict=True):
        assert file_sha256(path) == shard["sha256"]
        assert read_metadata(path)["spec"]["encoder"] == encoder
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".staging")]
    assert not leftovers


def test_mlflow_has_two_complete_run_trees_and_a_consistent_registry(two_runs):
    from mlflow.tracking import MlflowClient

    _, _, root, _ = two_runs
    client = MlflowClient()
    exp = client.get_experiment_by_name("smoke")
    parents = client.search_runs([exp.experiment_id], f"tags.stage = 'pipeline' and params.data_root = '{root}'")
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    first, second = sorted(parents, key=lambda p: p.info.start_time)
    assert second.info.start_time < first.info.end_time  # they really ran at the same time
    evaluate_runs, ingests = set(), []
    for parent in parents:
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(r.data.tags["stage"] for r in children) == STAGES
        assert all(r.info.status == "FINISHED" for r in children)
        evaluate_runs |= {r.info.run_id for r in children if r.data.tags["stage"] == "evaluate"}
        ingests += [r for r in children if r.data.tags["stage"] == "ingest"]
    # the ingests took turns on the folder lock: the second found every record in the first one's shards
    assert sorted((r.data.metrics["processed"], r.data.metrics["kept"]) for r in ingests) == [(0, 80), (80, 0)]
    assert len({r.data.tags["dataset_digest"] for r in ingests}) == 1
    versions = client.search_model_versions(f"name = '{MODEL}'")
    # Same data, config and code: the second run may find the model already registered (it is then not
    # registered twice) or register it too. Either way the numbers are unique and gapless, every version
    # is complete and comes from one of the two runs, and each alias points at one of them.
    numbers = sorted(int(v.version) for v in versions)
    assert numbers in ([1], [1, 2])
    assert {v.run_id for v in versions} <= evaluate_runs and all(v.status == "READY" for v in versions)
    aliases = client.get_registered_model(MODEL).aliases  # alias -> version
    assert "champion" in aliases and {str(v) for v in aliases.values()} <= {str(n) for n in numbers}


def test_folder_lock_makes_writers_take_turns_and_dies_with_its_holder(tmp_path):
    from mmcore.io import folder_lock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mmcore.io import folder_lock\n"
                               f"with folder_lock({str(tmp_path / 'out')!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="locked by another run"):
            with folder_lock(tmp_path / "out", timeout=0.3):
                pass
    finally:
        holder.kill()  # killed while holding it: the kernel releases the lock
        holder.wait()
    with folder_lock(tmp_path / "out", timeout=5):
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written beside or into the folder


def test_four_runs_started_together_in_a_fresh_folder_all_finish(tmp_path):
    """No Prefect API and no MLflow store yet: the four would race to start the local Prefect server and to
    create and migrate both databases. One starts the server, and the other three find it."""
    from mlflow.tracking import MlflowClient

    from mmcore.data.synth import generate_shapes

    generate_shapes(tmp_path / "data" / "raw" / "smoke", 40, seed=4, image_size=32)
    home = tmp_path / "mm"
    env = {**os.environ, "MM_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MM_ARTIFACT_ROOT"):
        env.pop(key, None)
    sets = {"data_root": str(tmp_path / "data"), "pretrain.epochs": 1, "heads.epochs": 1, "heads.vqa_baselines": False,
            "heads.translation": False, "heads.generation": False}
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--preset", "smoke",
           *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, "\n\n".join(o[-3000:] for o in outputs)
    # The migration races: a server that did not start, a database table created twice (MLflow's note that a
    # registered model already exists, when two runs register at once, is not one of them).
    races = [line for o in outputs for line in o.splitlines()
             if "Application startup failed" in line or re.search(r"table \S+ already exists", line)]
    assert races == []
    assert sum("Prefect API: local server, started now" in o for o in outputs) == 1  # one server, one database
    assert sum("Prefect API: local server on" in o for o in outputs) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'pipeline'")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
