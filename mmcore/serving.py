"""Serving: a table of requests -> one answer row per request, through a `Predictor`, and the contract
every request is checked against before any of it is decoded, tokenised or run.

A request is a row with a `task` column (caption | ask | search | translate | generate) and the columns
that task needs; requests of one task are answered in one batch. The registered MLflow model
(mmcore/pyfunc_model.py) answers `mm caption/ask/search/translate/generate` and `mlflow models serve`
requests with this.

The contract: every declared column (`INPUTS`) holds strings or is missing/null, and nothing else is a
column; rows, text length, image bytes and image pixels (read from the image header, never by decoding)
are bounded by the model's `Limits`, which travel with it in its bundle (mmcore/stages/package.py); params
(`PARAMS`) have their declared types and ranges, and unknown ones are refused. A bad request raises
`BadRequest`, a ValueError whose message is one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mmcore.catalog import BundleDir
from mmcore.config import IngestConfig, ServingConfig
from mmcore.inference import ImageError, PixelBomb, Predictor, image_size
from mmcore.io import read_json

TASKS = ("caption", "ask", "search", "translate", "generate")
INPUTS = ("task", "image", "question", "text", "lang")  # the declared string columns; only `task` is required
NEEDS = {"caption": ("image",), "ask": ("image", "question"), "search": ("text",), "translate": ("text", "lang"),
         "generate": ("text", "lang")}
COLUMNS = ("answer", "score", "matches")
NAN = float("nan")
_HEADS = {"caption": "captioner", "ask": "vqa", "translate": "translator", "generate": "generator"}
_MAX_MESSAGE = 300  # characters: MLflow puts a repr of the whole input before it, so keep ours short


class BadRequest(ValueError):
    """A request the model does not accept. The message is one line, at most a few hundred characters."""

    def __init__(self, message: str):
        text = " ".join(str(message).split())
        super().__init__(text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "...")


@dataclass(frozen=True)
class Limits:
    """What one request may hold (`cfg.serving`, resolved: unset limits take ingest's)."""

    max_rows: int  # requests (rows) in one call
    max_text_chars: int  # characters of any string but an image (task, question, text, lang)
    max_image_bytes: int  # bytes of one encoded image file
    max_image_pixels: int  # width x height of one image, from its header
    max_k: int  # search results per text

    @classmethod
    def from_config(cls, serving: ServingConfig, ingest: IngestConfig) -> Limits:
        return cls(serving.max_rows, serving.max_text_chars or ingest.max_text_chars, serving.max_image_bytes,
                   serving.max_image_pixels or ingest.max_side ** 2, serving.max_k)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Limits:
        """The limits a bundle was packaged with; a bundle from before limits gets the default config's."""
        given = dict(meta.get("serving") or {})
        names = [f.name for f in fields(cls)]
        bad = sorted(k for k, v in given.items() if k not in names or not _number(v, "long") or v < 1)
        if bad:
            raise ValueError(f"bundle serving limits {bad} are unknown or not integers >= 1; limits are {names}")
        return replace(cls.from_config(ServingConfig(), IngestConfig()), **given)

    def as_meta(self) -> dict[str, int]:
        return asdict(self)

    @property
    def max_image_chars(self) -> int:
        """base64 characters of an image of max_image_bytes bytes."""
        return 4 * ((self.max_image_bytes + 2) // 3)


@dataclass(frozen=True)
class Param:
    """One request param: its MLflow type (long | double), default and allowed range."""

    dtype: str
    default: int | float
    low: float
    high: float | str | None = None  # a number, "max_k" (the model's limit) or None (no upper bound)
    low_open: bool = False  # low itself is not allowed
    note: str = ""

    def allowed(self, limits: Limits | None) -> str:
        high = self._high(limits)
        if self.dtype == "long":
            text = f"an integer from {self.low} to {high}" if high is not None else f"an integer >= {self.low}"
        else:
            text = f"a number {'>' if self.low_open else '>='} {self.low}" + (f" and <= {high}" if high else "")
        return text + self.note

    def check(self, label: str, value: Any, limits: Limits | None) -> int | float:
        """`value` as this param's type; BadRequest naming it `label` if it is not of it or out of range."""
        high = self._high(limits)
        if not _number(value, self.dtype) or value < self.low or (self.low_open and value == self.low) or (
                high is not None and value > high):
            raise BadRequest(f"{label} must be {self.allowed(limits)}; got {_show(value)}")
        return int(value) if self.dtype == "long" else float(value)

    def _high(self, limits: Limits | None) -> float | None:
        if self.high == "max_k":  # the model's own limit; unknown without one
            return limits.max_k if limits else None
        return self.high


def _number(value: Any, dtype: str) -> bool:
    """An integer (long) or a finite real number (double); never a bool, a string or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if dtype == "long":
        return isinstance(value, numbers.Integral)
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


PARAMS = {
    "k": Param("long", 5, 1, "max_k", note=" (search results per text)"),
    # below 1e-6, logits / temperature overflow float32 and sampling fails
    "temperature": Param("double", 1.0, 1e-6, note=" (> 0; generate: > 1 more varied, < 1 more likely text)"),
    "top_k": Param("long", 0, 0, note=" (generate: sample among the k likeliest tokens; 0: all)"),
    "top_p": Param("double", 1.0, 0, 1, low_open=True, note=" (generate: nucleus sampling mass; 1: off)"),
    "seed": Param("long", -1, -1, 2 ** 63 - 1, note=" (generate: -1 draws afresh every call)"),
}


@dataclass(frozen=True)
class Contract:
    """What one model accepts: its limits, the tasks it serves and the languages it writes."""

    limits: Limits
    tasks: tuple[str, ...]
    langs: tuple[str, ...]

    @classmethod
    def of(cls, predictor: Predictor) -> Contract:
        heads = predictor.heads
        tasks = tuple(t for t in TASKS if t not in _HEADS or getattr(heads, _HEADS[t]) is not None)
        return cls(Limits.from_meta(predictor.meta), tasks, tuple(heads.text_langs))


def load_predictor(bundle_dir: str | Path, device: str = "cpu") -> Predictor:
    """The predictor of a bundle, which decodes no image above the bundle's pixel limit."""
    limits = Limits.from_meta(read_json(BundleDir(Path(bundle_dir)).meta))
    return Predictor(bundle_dir, device, max_image_pixels=limits.max_image_pixels)


def param_defaults(limits: Limits | None = None) -> dict[str, int | float]:
    """Each param's default; k's is at most the model's max_k (a model may allow fewer than 5 results)."""
    defaults = {name: spec.default for name, spec in PARAMS.items()}
    if limits:
        defaults["k"] = min(defaults["k"], limits.max_k)
    return defaults


def check_params(params: Mapping[str, Any] | None, limits: Limits | None = None) -> dict[str, int | float]:
    """Every param, checked (unknown names refused), with the defaults filled in.

    `limits=None` checks what can be checked without a model (k >= 1 but no upper bound).
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise BadRequest(f"params must be a mapping of name to value; got {type(params).__name__}")
    unknown = sorted(str(name) for name in params if name not in PARAMS)
    if unknown:
        raise BadRequest(f"unknown param(s) {_show(unknown)}; this model takes {', '.join(PARAMS)}")
    return {name: PARAMS[name].check(f"param {name!r}", params[name], limits) if name in params else default
            for name, default in param_defaults(limits).items()}


def check_requests(requests: Any, contract: Contract) -> None:
    """Checks a table of requests against the contract, before anything in it is decoded or run."""
    limits = contract.limits
    if not isinstance(requests, pd.DataFrame):
        raise BadRequest(f"requests must be a table with columns {', '.join(INPUTS)}; got {type(requests).__name__}")
    if len(requests) > limits.max_rows:
        raise BadRequest(f"{len(requests)} requests in one call; at most {limits.max_rows} allowed")
    unknown = [str(c) for c in requests.columns if c not in INPUTS]
    if unknown or requests.columns.has_duplicates:
        raise BadRequest(f"unknown or repeated column(s) {_show(unknown or list(requests.columns))}; requests "
                         f"have the columns {', '.join(INPUTS)}, once each")
    if "task" not in requests:
        raise BadRequest(f"requests need a 'task' column: one of {', '.join(contract.tasks)}")
    names = list(requests.columns)
    for row, values in enumerate(zip(*(requests[c].tolist() for c in names), strict=True)):
        _check_row(row, dict(zip(names, values, strict=True)), contract)


def _check_row(row: int, cells: dict[str, Any], contract: Contract) -> None:
    limits = contract.limits
    for name, value in cells.items():
        if _missing(value):
            continue
        if not isinstance(value, str):
            raise BadRequest(f"request {row}: {name!r} must be a string or null; got {type(value).__name__} "
                             f"{_show(value)}")
        if name == "image" and len(value) > limits.max_image_chars:
            raise BadRequest(f"request {row}: 'image' is {len(value)} characters of base64 (about "
                             f"{len(value) * 3 // 4} bytes); at most {limits.max_image_bytes} bytes allowed")
        if name != "image" and len(value) > limits.max_text_chars:
            raise BadRequest(f"request {row}: {name!r} has {len(value)} characters; at most "
                             f"{limits.max_text_chars} allowed")
    task = cells["task"]
    if task not in contract.tasks:
        what = (f"task {task!r} is not one this model serves" if task in TASKS else
                "'task' is missing" if _missing(task) else f"unknown task {_show(task)}")
        raise BadRequest(f"request {row}: {what}; choose from {', '.join(contract.tasks)}")
    missing = [name for name in NEEDS[task] if _missing(cells.get(name))]
    if missing:
        raise BadRequest(f"request {row}: a {task} request needs {' and '.join(map(repr, missing))}")
    if "lang" in NEEDS[task] and cells["lang"] not in contract.langs:
        raise BadRequest(f"request {row}: unknown language {_show(cells['lang'])}; this model writes "
                         f"{', '.join(contract.langs)}")


def answer_requests(predictor: Predictor, requests: pd.DataFrame, params: Mapping[str, Any] | None = None,
                    **keywords: Any) -> pd.DataFrame:
    """One output row (answer, score, matches) per request row, in order.

    `params` (`PARAMS`): k, search results per text; temperature, top_k, top_p and seed (-1: a fresh draw)
    steer generate. translate and generate requests are batched per language (their `lang` column).
    `keywords`: params as keyword arguments, as the entry point of models registered before `params` passes
    them (a model's code travels with it; the library is the server's), checked the same way.
    """
    if keywords:
        params = {**(params or {}), **keywords}
    contract = Contract.of(predictor)
    check_requests(requests, contract)
    checked = check_params(params, contract.limits)
    rows = requests.reset_index(drop=True)
    out: list[dict[str, Any]] = [{}] * len(rows)
    for task in TASKS:
        idx = rows.index[rows["task"] == task].tolist()
        if idx:
            for i, result in zip(idx, _answer(predictor, task, rows, idx, checked, contract.limits), strict=True):
                out[i] = result
    return pd.DataFrame(out, columns=list(COLUMNS))


def _answer(predictor: Predictor, task: str, rows: pd.DataFrame, idx: list[int], params: dict[str, Any],
            limits: Limits) -> list[dict[str, Any]]:
    """The answers to the requests `idx` of one task, in order."""
    if task in ("caption", "ask"):
        images = [_image(value, row, limits) for row, value in zip(idx, rows.loc[idx, "image"], strict=True)]
        try:
            if task == "caption":
                return [_row(text) for text in predictor.caption(images)]
            return [_row(answer, p) for answer, p in predictor.answer(images, rows.loc[idx, "question"].tolist())]
        except ImageError as exc:  # decoding found it broken (truncated, corrupt): name its request
            raise BadRequest(f"request {idx[exc.index]}: 'image' {exc.reason}") from None
    texts = rows.loc[idx, "text"].tolist()
    if task == "search":
        found = predictor.search(texts, params["k"])
        return [_row(m[0].image_path if m else "", m[0].score if m else NAN, json.dumps([vars(x) for x in m]))
                for m in found]
    langs = rows.loc[idx, "lang"].tolist()
    sampling = {"temperature": params["temperature"], "top_k": params["top_k"], "top_p": params["top_p"],
                "seed": None if params["seed"] < 0 else params["seed"]}
    results: list[dict[str, Any]] = [{}] * len(idx)
    for lang in sorted(set(langs)):
        part = [j for j, x in enumerate(langs) if x == lang]
        batch = [texts[j] for j in part]
        made = (predictor.translate(batch, lang) if task == "translate" else
                predictor.generate(batch, lang, **sampling))
        for j, text in zip(part, made, strict=True):
            results[j] = _row(text)
    return results


def _image(value: str, row: int, limits: Limits) -> bytes:
    """The image file of request `row`, checked for size in bytes and, from its header, in pixels."""
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise BadRequest(f"request {row}: 'image' must be the base64 of an image file ({exc})") from None
    if len(data) > limits.max_image_bytes:
        raise BadRequest(f"request {row}: 'image' is {len(data)} bytes; at most {limits.max_image_bytes} bytes allowed")
    try:
        width, height = image_size(data)
    except PixelBomb as exc:
        raise BadRequest(f"request {row}: 'image' {exc}; at most {limits.max_image_pixels} pixels allowed") from None
    except ValueError as exc:
        raise BadRequest(f"request {row}: 'image' {exc}") from None
    if width * height > limits.max_image_pixels:
        raise BadRequest(f"request {row}: 'image' is {width} x {height} = {width * height} pixels; at most "
                         f"{limits.max_image_pixels} allowed")
    return data


def _row(answer: str, score: float = NAN, matches: str = "[]") -> dict[str, Any]:
    return {"answer": answer, "score": score, "matches": matches}


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4


def _show(value: Any) -> str:
    """A short repr of a value from a request, however long the value is."""
    text = _REPR.repr(value)
    return f"{text} ({len(value)} characters)" if isinstance(value, str) and len(value) > 40 else text
