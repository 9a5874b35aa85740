"""extract_shard: its length-sorted caption batches and threaded PNG decoding write the features that plain
shard-order batching does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmcore.catalog import ProcessedDir
from mmcore.config import EncoderConfig
from mmcore.data.shards import decode_png, vector_lists_to_numpy, vectors_to_numpy
from mmcore.features import _caption_matrix, _decode_images, caption_batches, extract_shard
from mmcore.models.contrastive import DualEncoder, build_dual_encoder
from mmcore.training.loop import pad_batch

VOCAB = 40
COUNTS = [2, 0, 3, 1, 2, 4, 1]  # captions per sample; one sample has none


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, Path]:
    """A 7-sample shard of 16 px PNGs and its tokens: 13 captions of 0-11 tokens in no length order."""
    rng = np.random.default_rng(0)
    caption_ids = [[rng.integers(1, VOCAB, int(rng.integers(1, 12))).tolist() for _ in range(c)] for c in COUNTS]
    caption_ids[2][1] = []  # an empty caption is all padding
    ids = [f"s{i}" for i in range(len(COUNTS))]
    samples = pa.table({
        "sample_id": ids,
        "split": ["train", "val", "train", "test", "train", "val", "train"],
        "image": [_png(rng) for _ in COUNTS],
        "captions": [[{"lang": "en" if j % 2 else "de", "text": "x"} for j in range(c)] for c in COUNTS],
    })
    tokens = pa.table({"sample_id": ids, "caption_ids": pa.array(caption_ids, pa.list_(pa.list_(pa.int32())))})
    processed = ProcessedDir(tmp_path)
    pq.write_table(samples, processed.samples(0))
    pq.write_table(tokens, processed.tokens(0))
    return processed.samples(0), processed.tokens(0)


@torch.no_grad()
def _shard_order_features(model: DualEncoder, samples: Path, tokens: Path, batch: int) -> dict[str, np.ndarray]:
    """The features the straightforward way: Pillow decoding, caption batches in shard order."""
    blobs = pq.read_table(samples, columns=["image"])["image"].to_pylist()
    outs = [model.encode_image(torch.from_numpy(np.stack([decode_png(b) for b in blobs[i : i + batch]])))
            for i in range(0, len(blobs), batch)]
    flat = [ids for caps in pq.read_table(tokens)["caption_ids"].to_pylist() for ids in caps]
    text = torch.cat([model.encode_text(pad_batch(flat[i : i + batch])) for i in range(0, len(flat), batch)])
    return {"image_embedding": torch.cat([o.embedding for o in outs]).numpy(),
            "image_pooled": torch.cat([o.pooled for o in outs]).numpy(),
            "image_grid": torch.cat([o.grid.flatten(1) for o in outs]).numpy(), "text": text.numpy()}


@pytest.mark.parametrize("text_encoder", ["gru", "lstm", "transformer"])
def test_extract_shard_matches_shard_order_batching(shards, tmp_path, text_encoder):
    samples, tokens = shards
    torch.manual_seed(0)
    cfg = EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=16, grid=2,
                        text_encoder=text_encoder, max_text_len=16)
    model = build_dual_encoder(cfg, VOCAB).eval()
    out = tmp_path / "features-00000.parquet"
    res = extract_shard(model, samples, tokens, out, "sha", torch.device("cpu"), batch_size=3)
    assert res == {"path": out.name, "rows": 7, "skipped": False}

    got, want = pq.read_table(out), _shard_order_features(model, samples, tokens, batch=3)
    assert got["sample_id"].to_pylist() == [f"s{i}" for i in range(7)]
    assert got["split"].to_pylist() == pq.read_table(samples)["split"].to_pylist()
    assert got["caption_langs"].to_pylist() == [["de", "en", "de", "en"][:c] for c in COUNTS]
    for col in ("image_embedding", "image_pooled", "image_grid"):  # same image batches: the same bits
        np.testing.assert_array_equal(vectors_to_numpy(got[col]), want[col])
    text = vector_lists_to_numpy(got["text_embeddings"])
    assert [len(t) for t in text] == COUNTS
    np.testing.assert_allclose(np.concatenate(text), want["text"], rtol=0, atol=1e-6)  # other batches: rounding

    again = extract_shard(model, samples, tokens, out, "sha", torch.device("cpu"), batch_size=3)
    assert again == {"path": out.name, "rows": 7, "skipped": True}


def test_a_corrupt_shard_is_written_again_with_a_warning_and_fresh_does_not_read_it(shards, tmp_path, monkeypatch):
    import warnings

    from mmcore import features as F
    from mmcore.integrity import CorruptOutputWarning
    from tests.mmcore.stages.corruptkit import truncate

    samples, tokens = shards
    torch.manual_seed(0)
    model = build_dual_encoder(EncoderConfig(image_arch="smallcnn", word_dim=8, text_hidden=8, embed_dim=16, grid=2),
                               VOCAB).eval()
    out, cpu = tmp_path / "features-00000.parquet", torch.device("cpu")
    extract_shard(model, samples, tokens, out, "sha", cpu)
    good = truncate(out)
    with pytest.warns(CorruptOutputWarning, match=rf"{out} is corrupt \(ArrowInvalid: .*\): extracting it again"):
        assert extract_shard(model, samples, tokens, out, "sha", cpu)["skipped"] is False
    assert out.read_bytes() == good  # the same encoder on the same shard: the same bytes
    said: list[str] = []
    pq.write_table(pq.read_table(out).slice(0, 5).replace_schema_metadata(pq.read_schema(out).metadata), out)
    assert extract_shard(model, samples, tokens, out, "sha", cpu, warn=said.append)["skipped"] is False
    assert said == [f"{out} is corrupt (5 rows for the 7 samples of {samples.name}): extracting it again"]
    assert out.read_bytes() == good
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptOutputWarning)
        assert extract_shard(model, samples, tokens, out, "other", cpu)["skipped"] is False  # new inputs: no warning
        truncate(out)
        monkeypatch.setattr(F, "kept_rows", lambda *a: pytest.fail("fresh read the shard it replaces"))
        assert extract_shard(model, samples, tokens, out, "sha", cpu, fresh=True)["skipped"] is False
    assert out.read_bytes() == good


def test_length_sorted_batches_pad_each_batch_to_its_longest_caption():
    column = pa.chunked_array([[[[5, 6, 7], []], [[1]]], [[[2, 3], [4, 4, 4, 4]]]], pa.list_(pa.list_(pa.int32())))
    ids, lengths, counts = _caption_matrix(column, pad_id=0)
    assert counts == [2, 1, 2] and lengths.tolist() == [3, 0, 1, 2, 4]
    assert ids.tolist() == [[5, 6, 7, 0], [0, 0, 0, 0], [1, 0, 0, 0], [2, 3, 0, 0], [4, 4, 4, 4]]
    order, batches, counts = caption_batches(column, pad_id=0, batch_size=2)
    assert counts == [2, 1, 2] and order.tolist() == [1, 2, 3, 0, 4]
    assert [b.tolist() for b in batches] == [[[0], [1]], [[2, 3, 0], [5, 6, 7]], [[4, 4, 4, 4]]]


def test_decode_images_on_threads_matches_pillow():
    rng = np.random.default_rng(1)
    blobs = [_png(rng) for _ in range(5)]
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buf, format="PNG")  # greyscale
    blobs.append(buf.getvalue())
    want = np.stack([decode_png(b) for b in blobs])  # (6, 3, 16, 16)
    for workers in (1, 2, 4):
        np.testing.assert_array_equal(_decode_images(blobs, workers).numpy(), want)
