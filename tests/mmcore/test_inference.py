"""The model bundle and predictor, built from tiny untrained parts."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import torch
from PIL import Image

from mmcore.inference import ImageError, PixelBomb, Predictor, decode_image, image_size
from mmcore.training.loop import pad_batch


def bomb(width: int, height: int) -> bytes:
    """A PNG header claiming width x height grey pixels, and no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


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
    with pytest.raises(ImageError, match="^image 1 is not an image file Pillow can read") as err:
        p.caption([png(), b"not an image"])
    assert (err.value.index, err.value.reason.split(" (")[0]) == (1, "is not an image file Pillow can read")
    with pytest.raises(ImageError, match=r"^image 0 could not be decoded \(.*truncated"):
        p.caption([png()[:60]])
    with pytest.raises(ValueError, match="one question per image"):
        p.answer([png()], ["a", "b"])
    with pytest.raises(ValueError, match="need k >= 1"):
        p.search(["a red circle"], k=0)


def test_no_image_above_the_pixel_limit_is_decoded(tiny_bundle, monkeypatch):
    from PIL import ImageFile

    assert image_size(png(size=(40, 30))) == (40, 30)
    assert decode_image(png(size=(40, 30)), 8, max_pixels=1200).shape == (3, 8, 8)
    capped = Predictor(tiny_bundle, max_image_pixels=40 * 30 - 1)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("an image was decoded"))
    with pytest.raises(ImageError, match=r"^image 0 is 40 x 30 = 1200 pixels; at most 1199 allowed$"):
        capped.caption([png(size=(40, 30))])
    huge = bomb(20_000, 20_000)  # beyond Pillow's own guard, which refuses to open it at all
    with pytest.raises(PixelBomb, match="^claims 400000000 pixels, a decompression bomb"):
        image_size(huge)
    with pytest.raises(ImageError, match="^image 0 claims 400000000 pixels"):
        Predictor(tiny_bundle).caption([huge])


def test_incomplete_bundle_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads.pt"):
        Predictor(tmp_path)
