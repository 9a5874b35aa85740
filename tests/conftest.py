"""Shared fixtures: a tiny synthetic dataset, and all local state in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MM_HOME for the whole session, set before `flows` (and so Prefect) is first imported."""
    home = tmp_path_factory.mktemp("mm_home")
    os.environ["MM_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "MM_ARTIFACT_ROOT"):
        os.environ.pop(key, None)
    return home


@pytest.fixture(scope="session")
def shapes_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic images in the canonical layout (read-only for tests: copy before changing)."""
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("raw") / "shapes"
    generate_shapes(root, 120, seed=3, image_size=32)
    return root
