"""The model bundle and predictor, built from tiny untrained parts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mmcore.inference import Predictor


def png(color=(200, 20, 20), size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 0).save(buf, format="PNG")
    return buf.getvalue()


def test_bundle_heads_reload_with_the_trained_word_dims_and_answer(tiny_bundle):
    p = Predictor(tiny_bundle)
    caps = p.caption([png(), png(mode="L")])  # any size and mode is resized to RGB
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
    answers = p.answer([png()], ["what color is the circle?"])
    assert answers[0][0] in {"red", "blue", "2"} and 0 < answers[0][1] <= 1
    found = p.search(["a red circle"], k=3)[0]
    assert len(found) == 3 and [m.score for m in found] == sorted((m.score for m in found), reverse=True)


def test_bad_requests_get_clear_errors(tiny_bundle):
    p = Predictor(tiny_bundle)
    with pytest.raises(ValueError, match="image 0 could not be decoded"):
        p.caption([b"not an image"])
    with pytest.raises(ValueError, match="one question per image"):
        p.answer([png()], ["a", "b"])


def test_incomplete_bundle_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads.pt"):
        Predictor(tmp_path)
