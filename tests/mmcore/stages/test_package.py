"""The package stage: the test-split digest the champion gate compares (it changes only with the content of
that split), and the serving limits the bundle carries."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmcore.catalog import ProcessedDir, shard_name
from mmcore.io import write_json
from mmcore.stages.package import split_digest

SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("split", pa.string()), ("image", pa.binary()),
    ("captions", pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))),
    ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("type", pa.string())]))),
])


def _processed(root: Path, rows: list[dict]) -> ProcessedDir:
    """Two sample shards (rows 0-1 and 2-3) and the manifest that lists them."""
    processed = ProcessedDir(root)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    root.mkdir(parents=True)
    pq.write_table(table.slice(0, 2), processed.samples(0))
    pq.write_table(table.slice(2), processed.samples(1))
    write_json(processed.manifest, {"shards": [{"samples": shard_name("samples", i)} for i in (0, 1)]})
    return processed


def _rows(**change: str) -> list[dict]:
    rows = [{"sample_id": f"s{i}", "split": "test" if i % 2 else "train", "image": f"png{i}".encode(),
             "captions": [{"lang": "en", "text": f"caption {i}"}], "qa": []} for i in range(4)]
    for key, value in change.items():  # e.g. s1="new caption": edit that sample's caption
        next(r for r in rows if r["sample_id"] == key)["captions"][0]["text"] = value
    return rows


def test_split_digest_changes_only_with_the_split_content(tmp_path):
    a = _processed(tmp_path / "a", _rows())
    base = split_digest(a)
    assert len(base) == 64 and base == split_digest(a, "test")  # the test split by default
    assert base == split_digest(_processed(tmp_path / "b", _rows()))  # the same content elsewhere
    assert base == split_digest(_processed(tmp_path / "c", _rows(s0="edited train caption")))  # s0 is train
    assert base != split_digest(_processed(tmp_path / "d", _rows(s1="edited test caption")))
    new_image = _rows()
    new_image[3]["image"] = b"another png"  # s3 is test
    assert base != split_digest(_processed(tmp_path / "e", new_image))
    assert base != split_digest(a, "train")


def test_the_bundle_carries_the_serving_limits_and_a_deployed_model_enforces_them(smoke_stages, tmp_path):
    import pandas as pd
    import pytest

    from mmcore.catalog import BundleDir
    from mmcore.io import read_json
    from mmcore.serving import BadRequest, answer_requests, load_predictor
    from mmcore.stages import package
    from tests.mmcore.test_serving import b64, png

    cfg, cat, _ = smoke_stages
    tight = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"max_rows": 2, "max_image_pixels": 400})})
    packed = package.run(tight, cat, tmp_path / "bundle", {"t2i_r1": 0.5, "note": "not a number"})
    meta = read_json(BundleDir(packed.bundle).meta)
    assert meta["metrics"] == {"t2i_r1": 0.5}
    assert meta["serving"] == {"max_rows": 2, "max_text_chars": cfg.ingest.max_text_chars,  # unset: ingest's
                               "max_image_bytes": 20_000_000, "max_image_pixels": 400, "max_k": 100}
    assert packed.model_digest == package.model_digest(tight, cat) != package.model_digest(cfg, cat)  # a new model

    predictor = load_predictor(packed.bundle)
    assert len(answer_requests(predictor, pd.DataFrame([{"task": "search", "text": "a red circle"}] * 2))) == 2
    with pytest.raises(BadRequest, match="^3 requests in one call; at most 2 allowed$"):
        answer_requests(predictor, pd.DataFrame([{"task": "search", "text": "a red circle"}] * 3))
    with pytest.raises(BadRequest, match="^request 0: 'image' is 21 x 20 = 420 pixels; at most 400 allowed$"):
        answer_requests(predictor, pd.DataFrame([{"task": "caption", "image": b64(png(size=(21, 20)))}]))
