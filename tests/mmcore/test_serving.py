"""Request routing of the served model (`answer_requests`), over a real (tiny, untrained) predictor: each
request gets the answer its task's predictor method gives, in the order the requests came."""

from __future__ import annotations

import base64
import io
import json
import math

import pandas as pd
import pytest
from PIL import Image

from mmcore.inference import Predictor
from mmcore.serving import COLUMNS, TASKS, answer_requests


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


GREEN, RED = _png((10, 200, 10)), _png((200, 10, 10))


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor(tiny_bundle)


def test_mixed_requests_come_back_in_order(predictor):
    question = "what color is the circle?"
    out = answer_requests(predictor, pd.DataFrame([
        {"task": "search", "text": "a red circle"},
        {"task": "caption", "image": _b64(GREEN)},
        {"task": "ask", "image": _b64(RED), "question": question},
        {"task": "caption", "image": _b64(RED)},
    ]), k=2)
    assert tuple(out.columns) == COLUMNS and len(out) == 4
    found = predictor.search(["a red circle"], 2)[0]
    assert json.loads(out["matches"][0]) == [vars(m) for m in found] and len(found) == 2
    assert (out["answer"][0], out["score"][0]) == (found[0].image_path, pytest.approx(found[0].score))
    assert out["answer"][0].startswith("images/")
    assert [out["answer"][1], out["answer"][3]] == predictor.caption([GREEN, RED])  # one batch, in request order
    assert math.isnan(out["score"][1]) and out["matches"][1] == "[]"
    answer, p = predictor.answer([RED], [question])[0]
    assert (out["answer"][2], out["score"][2]) == (answer, pytest.approx(p))
    assert answer in {"red", "blue", "2"} and 0.0 < p <= 1.0


def test_tasks_are_the_five_the_model_serves():
    assert TASKS == ("caption", "ask", "search", "translate", "generate")


@pytest.mark.parametrize(("rows", "message"), [
    ([{"text": "x"}], "'task' column"),
    ([{"task": "summarize", "text": "x"}], r"unknown task\(s\) \['summarize'\]"),
    ([{"task": "translate", "text": "x"}], "translate requests need a 'lang' value"),
    ([{"task": "ask", "image": _b64(GREEN)}], "ask requests need a 'question' value"),
    ([{"task": "caption", "image": "%%% not base64"}], "request 0: 'image' must be the base64"),
])
def test_bad_requests_name_the_problem(predictor, rows, message):
    with pytest.raises(ValueError, match=message):
        answer_requests(predictor, pd.DataFrame(rows))
