"""Every user error of the `mm` command is one line naming the bad value (and the valid choices), exit
status 2, before any server starts; `--debug` shows the traceback instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mmcore.stages.corruptkit import truncate
from tests.mmcore.stages.stagekit import copy_run

REPO = Path(__file__).resolve().parents[2]


def _mm(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from flows.cli import main

    monkeypatch.setattr(sys, "argv", ["mm", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    captured = capsys.readouterr()
    return stopped.value.code, (captured.out + captured.err).strip()


@pytest.fixture()
def broken(tmp_path: Path) -> Path:
    (tmp_path / "broken.yaml").write_text("pretrain:\n  epochs: [1,\n", encoding="utf-8")
    (tmp_path / "list.yaml").write_text("- one\n- two\n", encoding="utf-8")
    utf16 = tmp_path / "data" / "raw" / "smoke"
    utf16.mkdir(parents=True)
    (utf16 / "annotations.jsonl").write_text('{"id": "a", "image": "a.png"}\n', encoding="utf-16")
    return tmp_path


CASES = [
    (["pipeline", "--set", "pretrain.epochz=3"], ["pretrain.epochz is not a setting", "epochs, batch_size"]),
    (["pipeline", "--set", "encoder.text_encoder=rnn9"], ["encoder.text_encoder", "'rnn9'", "'gru', 'lstm'"]),
    (["pipeline", "--set", "pretrain.epochs=-1"], ["pretrain.epochs", "greater than or equal to 0", "-1"]),
    (["pipeline", "--preset", "nope"], ["unknown preset 'nope'", "demo", "smoke"]),
    (["pipeline", "--preset", "{root}/broken.yaml"], ["is not valid YAML at line 3"]),
    (["pipeline", "--preset", "{root}/list.yaml"], ["must be a mapping", "got list"]),
    (["pipeline", "--preset", "{root}/missing.yaml"], ["config file", "missing.yaml does not exist"]),
    (["pipeline", "--refresh", "pretrian"], ["unknown stage(s) ['pretrian']", "'pretrain'", "'all'"]),
    (["pipeline", "--set", "nokey"], ["--set expects key=value", "'nokey'"]),
    (["ingest", "--set", "data_root={root}/nowhere"], ["nowhere/raw/shapes does not exist", "mm data synth"]),
    (["ingest", "--format", "xml"], ["ingest.format", "'xml'", "'jsonl'"]),
    (["train", "--preset", "smoke", "--set", "data_root={root}/nowhere"], ["run the extract stage first"]),
    (["data", "rejects", "--preset", "smoke", "--set", "data_root={root}/nowhere"], ["run the ingest stage first"]),
]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_user_errors_are_one_line_and_exit_2(monkeypatch, capsys, broken, args, expected):
    code, out = _mm(monkeypatch, capsys, *[a.format(root=broken) for a in args])
    assert code == 2, out
    assert len(out.splitlines()) == 1 and out.startswith("error: "), out
    for text in expected:
        assert text in out


def test_a_utf16_annotation_file_is_named_in_one_line(monkeypatch, capsys, broken):
    code, out = _mm(monkeypatch, capsys, "ingest", "--preset", "smoke", "--set", f"data_root={broken / 'data'}")
    assert code == 2 and len(out.splitlines()) == 1, out
    assert "annotations.jsonl line 1 is not UTF-8 text" in out and "expected one JSON object per line" in out


def test_errors_come_before_any_server_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "MM_HOME": str(tmp_path / "mm"), "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--preset", "smoke", "--set", "pretrain.epochz=3"]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - started
    assert out.returncode == 2 and "Prefect API" not in out.stderr + out.stdout
    assert (out.stdout + out.stderr).strip().count("\n") == 0 and "pretrain.epochz" in out.stdout
    assert not (tmp_path / "mm" / "prefect").exists() or not any((tmp_path / "mm" / "prefect").iterdir())
    debug = subprocess.run([*cmd, "--debug"], env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "pretrain.epochz" in debug.stderr
    assert took < 60  # no server was started and waited for


def test_a_corrupt_upstream_output_is_one_line_naming_it_and_the_stage_to_run_again(monkeypatch, capsys,
                                                                                   smoke_stages, tmp_path):
    _, cat = copy_run(smoke_stages, tmp_path / "data")
    truncate(cat.pretrain.encoder)
    sets = [x for s in ("pretrain.epochs=1", "heads.epochs=1", "heads.text_epochs=1", f"data_root={cat.root}")
            for x in ("--set", s)]
    code, out = _mm(monkeypatch, capsys, "extract", "--preset", "smoke", *sets)
    assert code == 1 and len(out.splitlines()) == 1, out
    assert out.startswith(f"error: {cat.pretrain.encoder} is corrupt (torch.load fails on its "), out
    assert out.endswith("run the pretrain stage again (--refresh pretrain)"), out
