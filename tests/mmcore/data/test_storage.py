"""Storage on local folders: paths stay inside the root, listings are sorted and skip hidden files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from mmcore.data.storage import OutsideRoot, Storage
from mmcore.io import is_uri


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """root/ with nested, hidden and sibling-of-root files; returns root."""
    root = tmp_path / "root"
    for rel, data in {
        "z.txt": b"z",
        "a.txt": b"a",
        "b/c.txt": b"c",
        "b/d/e.bin": b"\x00\x01",
        ".hidden": b"h",
        ".git/config": b"g",
        "b/.DS_Store": b"x",
        "b/.cache/f.txt": b"f",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (tmp_path / "root2").mkdir()  # shares the root's name as a prefix: still outside it
    (tmp_path / "root2" / "s.txt").write_bytes(b"s")
    return root


def test_is_uri():
    assert is_uri("s3://bucket/x")
    assert not is_uri("data/raw/x")


def test_local_root_is_resolved(tree: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tree.parent)
    st = Storage("root")
    assert st.local
    assert st.uri == str(tree.resolve())
    assert st.read_bytes("a.txt") == b"a"


@pytest.mark.parametrize("rel", ["../secret.txt", "..", "b/../../secret.txt", "/etc/passwd", str(Path("/tmp")),
                                 "..\\secret.txt", "../root2/s.txt"])
def test_path_rejects_escapes(tree: Path, rel: str):
    st = Storage(tree)
    with pytest.raises(OutsideRoot, match="outside|not a relative path"):
        st.path(rel)
    with pytest.raises(OutsideRoot):
        st.read_bytes(rel)


def test_path_accepts_paths_that_stay_inside(tree: Path):
    st = Storage(tree)
    assert st.path("b/../a.txt") == f"{st.uri}/a.txt"
    assert st.path("./b/c.txt") == f"{st.uri}/b/c.txt"
    assert st.path("") == st.uri
    assert st.read_bytes("b/./d/../c.txt") == b"c"


def test_symlink_out_of_the_root_is_rejected(tree: Path):
    os.symlink(tree.parent / "secret.txt", tree / "link.txt")
    os.symlink(tree.parent / "root2", tree / "linkdir")  # a sibling whose name starts with the root's
    os.symlink(tree / "b" / "c.txt", tree / "inside.txt")  # a symlink that stays inside is fine
    st = Storage(tree)
    with pytest.raises(OutsideRoot, match="symlink"):
        st.path("link.txt")
    with pytest.raises(OutsideRoot, match="symlink"):
        st.read_bytes("linkdir/s.txt")
    assert st.read_bytes("inside.txt") == b"c"


def test_files_sorted_recursive_and_hidden_skipped(tree: Path):
    st = Storage(tree)
    assert st.files() == ["a.txt", "b/c.txt", "b/d/e.bin", "z.txt"]
    assert st.files(recursive=False) == ["a.txt", "z.txt"]
    assert st.files("b") == ["b/c.txt", "b/d/e.bin"]  # relative to the root, not to "b"
    assert st.files("nothing-here") == []


def test_read_bytes(tree: Path):
    st = Storage(tree)
    assert st.read_bytes("b/d/e.bin") == b"\x00\x01"
    with pytest.raises(FileNotFoundError, match="images/nope.png"):
        st.read_bytes("images/nope.png")
    with pytest.raises(FileNotFoundError, match="b does not exist"):  # a folder is not a file
        st.read_bytes("b")
    with st.open("b/c.txt") as fh:
        assert fh.read() == b"c"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        st.open("missing.txt")


def test_is_file_and_is_dir(tree: Path):
    st = Storage(tree)
    assert st.is_file("a.txt") and not st.is_dir("a.txt")
    assert st.is_dir("b") and not st.is_file("b")
    assert st.is_dir() and st.is_dir("b/d")
    assert not st.is_file("nope") and not st.is_dir("nope")
    assert not Storage(tree / "nope").is_dir()


def test_child_and_describe(tree: Path):
    st = Storage(tree)
    assert st.child("b").files() == ["c.txt", "d/e.bin"]
    assert st.describe("b/c.txt") == f"{st.uri}/b/c.txt"


def test_storage_survives_pickling(tree: Path):
    st = Storage(tree)
    assert st.read_bytes("a.txt") == b"a"  # connected: the filesystem handle is not pickled
    clone = pickle.loads(pickle.dumps(st))
    assert clone.uri == st.uri
    assert clone._fs is None
    assert clone.read_bytes("b/c.txt") == b"c"
    assert clone.files() == st.files()
    with pytest.raises(OutsideRoot):
        clone.path("../secret.txt")
