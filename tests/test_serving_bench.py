"""bench/serving.py's pure parts: percentiles, ratios, answer comparison, request bodies and the tables (no
server is started)."""

from __future__ import annotations

import json
import math

import pytest

from bench.serving import LAYERS, body, markdown, percentile, ratio, same_answer, schedule, summary


def test_percentile_interpolates_between_ranks_as_numpy_does():
    values = [10.0, 1.0, 4.0, 2.0, 3.0]  # unsorted on purpose
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile(values, 95) == pytest.approx(8.8)  # 4 + (10 - 4) * 0.8
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="from 0 to 100"):
        percentile(values, 101)


def test_summary_is_in_milliseconds_and_ratio_guards_zero():
    s = summary([0.001, 0.002, 0.003, 0.004, 0.100])
    assert (s["n"], s["p50_ms"], s["mean_ms"]) == (5, 3.0, 22.0)
    assert s["p95_ms"] == pytest.approx(80.8)
    assert ratio(30.0, 12.0) == 2.5
    assert math.isnan(ratio(1.0, 0.0))


def test_answers_compare_scores_with_a_tolerance_and_missing_scores_as_nan():
    a = {"answer": "red", "score": 0.5, "matches": "[]"}
    assert same_answer(a, {**a, "score": 0.5 + 1e-9})
    assert not same_answer(a, {**a, "score": 0.6})
    assert not same_answer(a, {**a, "answer": "blue"})
    assert same_answer({**a, "score": float("nan")}, {**a, "score": None})  # JSON may carry NaN as null
    assert not same_answer({**a, "score": None}, a)


def test_a_body_holds_only_the_request_columns_and_its_params():
    sent = json.loads(body({"task": "search", "text": "a red circle"}, {"k": 3}))
    assert sent == {"dataframe_split": {"columns": ["task", "text"], "data": [["search", "a red circle"]]},
                    "params": {"k": 3}}
    assert "params" not in json.loads(body({"task": "caption", "image": "AAAA"}, {}))


def test_the_schedule_times_every_request_once_per_layer_in_alternating_blocks():
    blocks = schedule(10, 3, ("a", "b"))
    assert [layer for layer, _ in blocks] == ["a", "b", "b", "a", "a", "b"]
    assert blocks[0] == ("a", [0, 3, 6, 9]) and blocks[2] == ("b", [1, 4, 7])
    for layer in ("a", "b"):
        assert sorted(i for x, block in blocks if x == layer for i in block) == list(range(10))
    assert schedule(2, 5, ("a",)) == [("a", [0]), ("a", [1])]  # no more rounds than requests


def _stats(p50: float, p95: float) -> dict:
    return {"n": 50, "p50_ms": p50, "p95_ms": p95, "mean_ms": p50}


def test_the_tables_show_every_task_layer_and_run_and_name_differing_answers():
    lat = {
        "search": {**{x: _stats(2.0, 3.0) for x in LAYERS}, "served": _stats(6.0, 12.0), "ratio_p50": 3.0,
                   "ratio_p95": 4.0, "mismatches": {"pyfunc": 0, "scoring": 0, "served": 0}, "others_cores": 0.1},
        "generate": {**{x: _stats(10.0, 20.0) for x in LAYERS}, "ratio_p50": 1.0, "ratio_p95": 1.0,
                     "mismatches": {"pyfunc": 0, "scoring": 0, "served": 2}, "others_cores": 0.9},
    }
    runs = [{"clients": 8, "requests": 200, "ok": 199, "seconds": 4.0, "requests_per_s": 50.0, "p50_ms": 100.0,
             "p95_ms": 300.0, "others_cores": 1.25}]
    text = markdown({"latency": lat, "throughput": runs, "loadavg": {"before": [0.5, 1.0, 2.0], "after": [1.5, 1, 2]}})
    assert "| search | 6.0 | 12.0 | 2.0 | 3.0 | 3.00 | 4.00 | yes | 0.10 |" in text
    assert "| generate | 10.0 | 20.0 | 10.0 | 20.0 | 1.00 | 1.00 | served: 2 differ | 0.90 |" in text
    assert "| search | 2.0 | 2.0 | 2.0 | 6.0 |" in text  # p50 of direct, pyfunc, scoring, served
    assert "| 8 | 200 | 199 | 4.00 | 50.0 | 100.0 | 300.0 | 1.25 |" in text
    assert text.endswith("before: 0.5, 1.0, 2.0; after: 1.5, 1, 2")
