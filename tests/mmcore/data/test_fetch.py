"""Fetching easy-VQA from its wheel: the real download (~3 MB), and the failure paths without a network."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sysconfig
from pathlib import Path

import pytest

from mmcore.data import fetch
from mmcore.data.fetch import fetch_easy_vqa


def _no_pip(*args, **kwargs):
    raise AssertionError("pip must not run")


def test_fetch_easy_vqa_downloads_data_without_installing(tmp_path, monkeypatch):
    dest = tmp_path / "easyvqa"
    assert fetch_easy_vqa(dest) == {"images": 5000, "questions": 48248}
    for split, images, questions in (("train", 4000, 38575), ("test", 1000, 9673)):
        assert len(json.loads((dest / split / "questions.json").read_text())) == questions
        assert len(list((dest / split / "images").glob("*.png"))) == images
    assert (dest / "train" / "images" / "0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((dest / "answers.txt").read_text().split()) == 13
    note = (dest / "SOURCE.txt").read_text()
    assert "easy-vqa 1.0" in note and "MIT" in note and "Victor Zhou" in note
    assert "MIT License" in (dest / "LICENSE").read_text()
    files = [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith(".py") or f.endswith(".DS_Store")]  # data only, no packages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["easyvqa"]  # no staging folder left behind

    # Nothing was installed or made importable: the wheel's `test` package would shadow the stdlib's
    assert importlib.util.find_spec("easy_vqa") is None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("easy-vqa")
    spec = importlib.util.find_spec("test")
    assert spec is None or Path(spec.origin).is_relative_to(sysconfig.get_paths()["stdlib"])

    monkeypatch.setattr(subprocess, "run", _no_pip)  # already there: no second download
    assert fetch_easy_vqa(dest) == {"images": 5000, "questions": 48248}


def test_pip_failure_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "easy-vqa==9.9" in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes...\nERROR: No matching distribution "
                                                        "found for easy-vqa==9.9\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match=r"(?s)easy-vqa==9\.9 \(exit 1\).*No matching distribution found"):
        fetch_easy_vqa(tmp_path / "easyvqa", version="9.9")
    assert list(tmp_path.iterdir()) == []


def test_wheel_without_data_is_rejected(tmp_path, monkeypatch):
    import zipfile

    def fake_pip(cmd, **kwargs):
        with zipfile.ZipFile(Path(cmd[-1]) / "easy_vqa-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("easy_vqa/__init__.py", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="has no easy_vqa/data/ folder"):
        fetch_easy_vqa(tmp_path / "easyvqa")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_with_other_content_is_not_overwritten(tmp_path, monkeypatch):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    monkeypatch.setattr(fetch.subprocess, "run", _no_pip)
    with pytest.raises(RuntimeError, match="exists but does not hold the easy-VQA data"):
        fetch_easy_vqa(dest)
    assert (dest / "mine.txt").read_text() == "keep"
