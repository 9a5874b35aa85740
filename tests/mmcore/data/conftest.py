"""Fixtures of the data tests: a small ingested dataset with its tokenizer and token shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.config import IngestConfig
from mmcore.data.ingest import IngestReport, ingest, tokens
from mmcore.data.records import ANNOTATIONS
from mmcore.data.sources import open_source

CFG = IngestConfig(image_size=16, shard_size=3, min_side=8, vocab_size=64, split=(0.5, 0.25, 0.25))
MAX_LEN = 12


@pytest.fixture()
def processed(tmp_path: Path) -> tuple[ProcessedDir, IngestReport]:
    """8 records in 3 shards: 6 good (2 captions and 1 question each), record 4 without its image file,
    record 8 with record 1's image; ingested, with the tokenizer and token shards written."""
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(8):
        image = {3: "images/gone.png", 7: "images/0.png"}.get(i, f"images/{i}.png")
        if i not in (3, 7):
            Image.new("RGB", (20, 20), (30 * i, 90, 200)).save(root / image)
        lines.append(json.dumps({"id": f"s{i}", "image": image, "split": "train" if i < 5 else "test",
                                 "captions": {"en": [f"a blue box {i}"], "zh": ["一个蓝色方块"]},
                                 "qa": [{"question": f"what number is it {i}?", "answer": str(i)}]},
                                ensure_ascii=False))
    (root / ANNOTATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = ProcessedDir(tmp_path / "processed")
    report = ingest(open_source(root), out, CFG)
    tokens.fit_tokenizer([s.samples_path for s in report.shards], CFG.vocab_size, out.tokenizer)
    for shard in report.shards:
        assert tokens.tokenize_shard(out, shard.index, MAX_LEN) == out.tokens(shard.index)
    return out, report
