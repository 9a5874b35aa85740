"""Serving: a table of requests -> one answer row per request, through a `Predictor`.

A request is a row with a `task` column (caption | ask | search | translate | generate) and the columns
that task needs; requests of one task are answered in one batch. The registered MLflow model
(mmcore/pyfunc_model.py) answers `mm caption/ask/search/translate/generate` and `mlflow models serve`
requests with this; a bad request raises ValueError with a message naming what is wrong.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pandas as pd

from mmcore.inference import Predictor

TASKS = ("caption", "ask", "search", "translate", "generate")
COLUMNS = ("answer", "score", "matches")
NAN = float("nan")


def answer_requests(predictor: Predictor, requests: pd.DataFrame, k: int = 5, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: int = -1) -> pd.DataFrame:
    """One output row (answer, score, matches) per request row, in order.

    `k`: search results per text; temperature, top_k, top_p and seed (-1: a fresh draw) steer generate.
    translate and generate requests are batched per language (their `lang` column).
    """
    if "task" not in requests:
        raise ValueError(f"requests need a 'task' column with one of {TASKS}")
    bad = sorted(set(requests["task"]) - set(TASKS))
    if bad:
        raise ValueError(f"unknown task(s) {bad}; choose from {TASKS}")
    rows = requests.reset_index(drop=True)
    out: list[dict[str, Any]] = [{}] * len(rows)
    sampling = {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
                "seed": None if int(seed) < 0 else int(seed)}
    for task in TASKS:
        idx = rows.index[rows["task"] == task].tolist()
        if idx:
            for i, result in zip(idx, _answer(predictor, task, rows, idx, k, sampling), strict=True):
                out[i] = result
    return pd.DataFrame(out, columns=list(COLUMNS))


def _answer(predictor: Predictor, task: str, rows: pd.DataFrame, idx: list[int], k: int,
            sampling: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers to the requests `idx` of one task, in order."""
    if task == "caption":
        return [_row(text) for text in predictor.caption(_images(_column(rows, "image", idx)))]
    if task == "ask":
        answers = predictor.answer(_images(_column(rows, "image", idx)), _column(rows, "question", idx))
        return [_row(answer, p) for answer, p in answers]
    if task == "search":
        found = predictor.search(_column(rows, "text", idx), k)
        return [_row(m[0].image_path if m else "", m[0].score if m else NAN, json.dumps([vars(x) for x in m]))
                for m in found]
    texts, langs = _column(rows, "text", idx), _column(rows, "lang", idx)
    results: list[dict[str, Any]] = [{}] * len(idx)
    for lang in sorted(set(langs)):
        part = [j for j, x in enumerate(langs) if x == lang]
        batch = [texts[j] for j in part]
        made = (predictor.translate(batch, lang) if task == "translate" else
                predictor.generate(batch, lang, **sampling))
        for j, text in zip(part, made, strict=True):
            results[j] = _row(text)
    return results


def _row(answer: str, score: float = NAN, matches: str = "[]") -> dict[str, Any]:
    return {"answer": answer, "score": score, "matches": matches}


def _column(rows: pd.DataFrame, name: str, idx: list[int]) -> list[Any]:
    if name not in rows or rows.loc[idx, name].isna().any():
        raise ValueError(f"{rows.loc[idx[0], 'task']} requests need a '{name}' value in every row")
    return rows.loc[idx, name].tolist()


def _images(values: list[Any]) -> list[bytes]:
    out = []
    for i, value in enumerate(values):
        try:
            out.append(base64.b64decode(value, validate=True))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"request {i}: 'image' must be the base64 of an image file ({exc})") from exc
    return out
