"""Public datasets fetched from their published packages, without installing those packages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

EASY_VQA_DATA = "easy_vqa/data/"
EASY_VQA_SPLITS = ("train", "test")

_SOURCE_NOTE = """easy-VQA data (questions, answers and images), https://github.com/vzhou842/easy-VQA

Taken from the easy-vqa {version} wheel on PyPI (https://pypi.org/project/easy-vqa/{version}/):
the files under {data} in {wheel}, unchanged (.DS_Store left out).
The package itself was not installed: its wheel also ships a top-level package named `test`,
which would shadow the standard library's.

Licence: MIT License, Copyright (c) 2019 Victor Zhou (the full text is in LICENSE beside this file).
"""


def _complete(dest: Path) -> bool:
    return all((dest / split / "questions.json").is_file() for split in EASY_VQA_SPLITS)


def _counts(dest: Path) -> dict[str, int]:
    questions = sum(len(json.loads((dest / s / "questions.json").read_text(encoding="utf-8")))
                    for s in EASY_VQA_SPLITS)
    images = sum(1 for s in EASY_VQA_SPLITS for _ in (dest / s / "images").glob("*.png"))
    return {"images": images, "questions": questions}


def _download_wheel(version: str, tmpdir: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"easy-vqa=={version}",
           "-d", tmpdir]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(f"pip could not download easy-vqa=={version} (exit {proc.returncode}):\n{tail}")
    wheels = sorted(Path(tmpdir).glob("easy_vqa-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download easy-vqa=={version} succeeded but left no easy_vqa-*.whl in {tmpdir}")
    return wheels[0]


def _extract(wheel: Path, staging: Path) -> None:
    """Members under easy_vqa/data/ into `staging` (macOS .DS_Store files left out), plus the licence."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(EASY_VQA_DATA) and not m.is_dir()]
        if not members:
            raise RuntimeError(f"{wheel.name} has no {EASY_VQA_DATA} folder: not the easy-VQA wheel expected")
        for member in members:
            rel = PurePosixPath(member.filename[len(EASY_VQA_DATA):])
            if rel.name == ".DS_Store":
                continue
            if rel.is_absolute() or ".." in rel.parts:  # never write outside the staging folder
                raise RuntimeError(f"{wheel.name}: unsafe member name {member.filename!r}")
            target = staging.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        licences = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")]
        if licences:
            (staging / "LICENSE").write_bytes(zf.read(licences[0]))


def fetch_easy_vqa(dest: Path, version: str = "1.0") -> dict[str, int]:
    """Downloads the easy-VQA data into `dest` (train/, test/, answers.txt) unless it is already there.

    The wheel is fetched with `pip download` and only its data files are unpacked; nothing is installed
    or imported. The folder appears complete or not at all (unpacked beside it, then renamed).

    Returns:
        {"images": ..., "questions": ...} over both splits (5,000 and 48,248 for version 1.0).
    """
    dest = Path(dest)
    if _complete(dest):
        return _counts(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RuntimeError(f"{dest} exists but does not hold the easy-VQA data (no train/ and test/ "
                           f"questions.json); remove it or choose another folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; it becomes an ordinary data folder
    try:
        with tempfile.TemporaryDirectory(prefix="easy-vqa-wheel-") as tmpdir:
            wheel = _download_wheel(version, tmpdir)
            _extract(wheel, staging)
            (staging / "SOURCE.txt").write_text(
                _SOURCE_NOTE.format(version=version, data=EASY_VQA_DATA, wheel=wheel.name), encoding="utf-8")
        if not _complete(staging):
            raise RuntimeError(f"easy-vqa=={version} has no {' and '.join(EASY_VQA_SPLITS)} questions.json")
        if dest.exists():
            dest.rmdir()  # empty (checked above): rename needs the name free
        try:
            staging.rename(dest)
        except OSError:
            if not _complete(dest):  # not a concurrent fetch that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _counts(dest)
