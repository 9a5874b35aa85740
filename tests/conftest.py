"""Shared fixtures. All local state (MLflow store, Prefect home) goes to a temporary folder: it is
set here, at import, so it is in place before any test imports `flows` (and so Prefect)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Each test process (and each command a test starts) gets its share of the cores: two xdist workers at two
# threads each on a 2-core machine make OpenMP's threads wait on one another.
_THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

_HOME = Path(tempfile.mkdtemp(prefix="mm-test-home-"))
os.environ["MM_HOME"] = str(_HOME)
os.environ["MM_SERVER_IDLE_S"] = "20"  # local Prefect servers the tests' commands start do not outlive them long
for _key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_HOME", "PREFECT_API_URL", "MM_ARTIFACT_ROOT"):
    os.environ.pop(_key, None)


@pytest.fixture(scope="session")
def mm_home() -> Iterator[Path]:
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def harness(mm_home: Path) -> Iterator[None]:
    """One temporary Prefect API for the session (starting one costs ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    import flows  # noqa: F401  (embedded defaults under the temporary MM_HOME)

    assert os.environ["MLFLOW_TRACKING_URI"].startswith(f"sqlite:///{mm_home}")
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def shapes_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic images in the canonical layout (read-only for tests: copy before changing)."""
    from mmcore.data.synth import generate_shapes

    root = tmp_path_factory.mktemp("raw") / "shapes"
    generate_shapes(root, 120, seed=3, image_size=32)
    return root


_TEXTS = ["a red circle on the left", "two shapes", "what color is the circle?", "一个红色圆形"]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle of tiny untrained parts: enough to exercise inference plumbing."""
    import numpy as np
    import pyarrow as pa

    from mmcore.catalog import BundleDir
    from mmcore.config import EncoderConfig
    from mmcore.data.shards import vectors
    from mmcore.models.builders import HeadDims, build_captioner, build_vqa
    from mmcore.models.contrastive import build_dual_encoder
    from mmcore.stages.package import write_bundle
    from mmcore.text.tokenizer import TextTokenizer
    from mmcore.training.contrastive import save_encoder
    from mmcore.training.heads import Heads, save_heads

    torch.manual_seed(0)
    tmp = BundleDir(tmp_path_factory.mktemp("bundle") / "parts")  # the parts, before they are bundled
    tmp.path.mkdir()
    tok = TextTokenizer.train(_TEXTS * 3, vocab_size=100)
    tok.save(tmp.tokenizer)
    cfg = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=16, grid=2)
    enc = build_dual_encoder(cfg, tok.vocab_size)
    save_encoder(enc, cfg, tok.vocab_size, tmp.encoder)
    grid, pooled, cells = enc.image_encoder.grid_channels, enc.image_encoder.out_channels, 4
    dims = HeadDims(tok.vocab_size, grid, pooled, cells, hidden=16, word_dim=8)
    heads = Heads(build_vqa(dims, 3), ["red", "blue", "2"], build_captioner(dims), "en", dims)
    save_heads(heads, tmp.heads)
    emb = np.eye(5, 16, dtype=np.float32)
    index = pa.table({"sample_id": [f"s{i}" for i in range(5)], "image_path": [f"images/{i}.png" for i in range(5)],
                      "image_embedding": vectors(emb)})
    return write_bundle(BundleDir(tmp.path.parent / "out"), tmp.encoder, tmp.heads, tmp.tokenizer, index,
                        {"image_size": 32, "max_text_len": 16, "max_caption_len": 6}).path


@pytest.fixture(scope="session")
def smoke_stages(tmp_path_factory: pytest.TempPathFactory):
    """(cfg, cat, PipelineResult): every stage run once in this process on 60 synthetic images with the smoke
    preset and one epoch per model (read-only for tests: copy the data root before changing it)."""
    from mmcore.catalog import Catalog
    from mmcore.config import load_config
    from mmcore.data.synth import generate_shapes
    from mmcore.stages import pipeline

    root = tmp_path_factory.mktemp("stages")
    generate_shapes(root / "raw" / "smoke", 60, seed=3, image_size=32)
    cfg = load_config("smoke", {"data_root": str(root), "pretrain.epochs": 1, "heads.epochs": 1,
                                "heads.text_epochs": 1})
    cat = Catalog.from_config(cfg)
    return cfg, cat, pipeline.run(cfg, cat, workers=1)
