"""The model bundle and predictor, built from tiny untrained parts."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from mmcore.inference import Predictor
from mmcore.training.loop import pad_batch


def png(color=(200, 20, 20), size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 0).save(buf, format="PNG")
    return buf.getvalue()


def test_the_predictor_answers_what_its_parts_compute(tiny_bundle):
    p = Predictor(tiny_bundle)
    images = p._images([png(), png(mode="L")])  # any size and mode is resized to a square RGB image
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    with torch.no_grad():
        feats = p.encoder.encode_image(images)
        ids = p.heads.captioner.generate(feats.grid, feats.pooled, p.tokenizer.bos_id, p.tokenizer.eos_id, 6)
        question = pad_batch(p.tokenizer.encode(["what color is the circle?"], 16))
        probs = p.heads.vqa(feats.grid[:1], feats.pooled[:1], question).softmax(-1)[0]
        text = p.encoder.encode_text(pad_batch(p.tokenizer.encode(["a red circle"], 16)))[0]
    assert p.caption([png(), png(mode="L")]) == [p.tokenizer.decode(row) for row in ids.tolist()]
    answer, score = p.answer([png()], ["what color is the circle?"])[0]
    assert answer == ["red", "blue", "2"][int(probs.argmax())] and score == pytest.approx(float(probs.max()))
    found = p.search(["a red circle"], k=3)[0]
    scores = (p.index_emb @ text).tolist()  # the index holds the first 5 unit vectors
    best = sorted(range(5), key=lambda j: -scores[j])[:3]
    assert [m.sample_id for m in found] == [f"s{j}" for j in best]
    assert [m.image_path for m in found] == [f"images/{j}.png" for j in best]
    assert [m.score for m in found] == pytest.approx([scores[j] for j in best])


def test_bad_requests_get_clear_errors(tiny_bundle):
    p = Predictor(tiny_bundle)
    with pytest.raises(ValueError, match="image 0 could not be decoded"):
        p.caption([b"not an image"])
    with pytest.raises(ValueError, match="one question per image"):
        p.answer([png()], ["a", "b"])


def test_incomplete_bundle_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads.pt"):
        Predictor(tmp_path)
