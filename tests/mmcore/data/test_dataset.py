"""An ingested dataset read back: the manifest, the tokenizer and the samples of some splits."""

from __future__ import annotations

import pytest

from mmcore.data import dataset as ds
from mmcore.data.ingest import tokens

MAX_LEN = 12  # what the `processed` fixture (conftest.py) tokenizes to


def test_a_dataset_without_a_manifest_says_to_run_the_ingest_stage(processed):
    out, _ = processed
    with pytest.raises(FileNotFoundError, match=f"no manifest.json in {out.path}: run the ingest stage first"):
        ds.read_manifest(out)
    with pytest.raises(FileNotFoundError, match="run the ingest stage first"):
        ds.load_samples(out)


def test_load_samples_reads_the_splits_asked_for_with_their_tokens(processed):
    out, report = processed
    tokens.build_manifest(out, report, {})
    everything = ds.load_samples(out, ("train", "val", "test"))
    assert everything.sample_ids == ["s0", "s1", "s2", "s4", "s5", "s6"] and len(everything) == 6
    assert everything.images.shape == (6, 3, 16, 16)
    assert everything.captions[0] == [{"lang": "en", "text": "a blue box 0"}, {"lang": "zh", "text": "一个蓝色方块"}]
    assert everything.qa[3] == [{"question": "what number is it 4?", "answer": "4", "type": "other", "answers": [],
                                 "answer_type": None, "question_type": None, "question_id": None}]
    assert everything.caption_ids[0] == ds.load_tokenizer(out).encode(["a blue box 0", "一个蓝色方块"], MAX_LEN)
    test = ds.load_samples(out, ("test",), with_images=False)
    assert (test.sample_ids, test.splits, test.images.shape) == (["s5", "s6"], ["test", "test"], (0, 3, 1, 1))
    assert test.question_ids == [everything.question_ids[4], everything.question_ids[5]]
