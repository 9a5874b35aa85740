"""Request routing of the pyfunc model, over a real (tiny, untrained) predictor."""

from __future__ import annotations

import base64
import io
import json

import pandas as pd
import pytest
from PIL import Image

from mmcore.inference import Predictor
from tasks.registry import SIGNATURE, answer_requests


def _b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_mixed_requests_come_back_in_order(tiny_bundle):
    p = Predictor(tiny_bundle)
    out = answer_requests(p, pd.DataFrame([
        {"task": "search", "text": "a red circle"},
        {"task": "caption", "image": _b64()},
        {"task": "ask", "image": _b64(), "question": "what color is the circle?"},
    ]), k=2)
    assert list(out.columns) == [c.name for c in SIGNATURE.outputs.inputs]
    assert len(json.loads(out["matches"][0])) == 2 and out["answer"][0].startswith("images/")
    assert isinstance(out["answer"][1], str)
    assert out["answer"][2] in {"red", "blue", "2"}


@pytest.mark.parametrize(("rows", "message"), [
    ([{"text": "x"}], "'task' column"),
    ([{"task": "summarize", "text": "x"}], "unknown task"),
    ([{"task": "translate", "text": "x"}], "'lang'"),
    ([{"task": "ask", "image": _b64()}], "'question'"),
    ([{"task": "caption", "image": "%%% not base64"}], "base64"),
])
def test_bad_requests_name_the_problem(tiny_bundle, rows, message):
    with pytest.raises(ValueError, match=message):
        answer_requests(Predictor(tiny_bundle), pd.DataFrame(rows))
