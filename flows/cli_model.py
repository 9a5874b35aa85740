"""`mm caption / ask / search / translate / generate`: the registered @champion model answers.

A bad option or file is one line (`error: ...`, exit 2) naming the bad value and what is allowed: what
can be checked without the model (an image file's header, the params' types and ranges) is checked before
the model is loaded; the rest (the model's limits and languages) is the model's own one-line answer.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli_options import console, fail
from mmcore.config import PipelineConfig

model_app = typer.Typer()
ModelUri = Annotated[str | None, typer.Option("--model", "-m",
                                              help="model URI (default models:/mmcore-<dataset>@champion)")]
DatasetName = Annotated[str, typer.Option("--dataset", "-d", help="dataset whose champion to use")]


def _predict(model: str | None, dataset: str, rows: list[dict[str, Any]], params: dict[str, Any] | None = None):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri = model or f"models:/{PipelineConfig(dataset=dataset).model_name}@champion"
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises its own types for a missing model or alias
        raise fail(f"could not load {uri}: {str(exc).splitlines()[0]}; run `mm demo` or `mm pipeline` first",
                   1) from None
    try:
        return loaded.predict(pd.DataFrame(rows), params=params)
    except MlflowException as exc:  # the model's one-line answer to a bad request (4xx), or its failure (5xx)
        message = " ".join(exc.message.split())
        raise fail(message, 2 if exc.get_http_status_code() < 500 else 1) from None


def _check_params(**params: Any) -> dict[str, Any]:
    """The params, checked before the model is loaded (the model checks its own limits, e.g. k's maximum)."""
    from mmcore.serving import PARAMS  # imported on use: it imports torch and pandas

    for name, value in params.items():
        try:
            PARAMS[name].check("-k" if name == "k" else "--" + name.replace("_", "-"), value, None)
        except ValueError as exc:
            raise fail(str(exc)) from None
    return params


def _image_b64(path: Path) -> str:
    """The file's base64, once its header says it is an image (a bomb or a non-image is refused unread)."""
    if not path.is_file():
        raise fail(f"{path} is not a file")
    from mmcore.inference import image_size  # imported on use: it imports torch

    data = path.read_bytes()
    try:
        image_size(data)
    except ValueError as exc:
        raise fail(f"{path} {exc}") from None
    return base64.b64encode(data).decode()


@model_app.command()
def caption(image: Path, model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Caption an image with the champion model."""
    out = _predict(model, dataset, [{"task": "caption", "image": _image_b64(image)}])
    console.print(out["answer"][0])


@model_app.command()
def ask(image: Path, question: str, model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Answer a question about an image with the champion model."""
    out = _predict(model, dataset, [{"task": "ask", "image": _image_b64(image), "question": question}])
    console.print(f"{out['answer'][0]}  (p={out['score'][0]:.2f})")


@model_app.command()
def search(text: str, k: Annotated[int, typer.Option("-k", help="results to show (at least 1)")] = 5,
           model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Find the dataset images that best match a text."""
    out = _predict(model, dataset, [{"task": "search", "text": text}], _check_params(k=k))
    table = Table(title=f"images matching {text!r}")
    for col in ("rank", "score", "sample", "image"):
        table.add_column(col)
    for rank, m in enumerate(json.loads(out["matches"][0]), 1):
        table.add_row(str(rank), f"{m['score']:.3f}", m["sample_id"], m["image_path"])
    console.print(table)


@model_app.command()
def translate(text: str, to: Annotated[str, typer.Option("--to", help="target language, e.g. en or zh")] = "zh",
              model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Translate a caption between the model's caption languages (English <-> Chinese on the demo)."""
    out = _predict(model, dataset, [{"task": "translate", "text": text, "lang": to}])
    console.print(out["answer"][0])


@model_app.command()
def generate(prompt: str, lang: Annotated[str, typer.Option(help="language to write")] = "en",
             n: Annotated[int, typer.Option("-n", help="texts to sample (at least 1)")] = 3,
             temperature: Annotated[float, typer.Option(help="> 0: > 1 more varied, < 1 more likely text")] = 1.0,
             top_k: Annotated[int, typer.Option(help="sample among the k likeliest tokens (0: all)")] = 0,
             top_p: Annotated[float, typer.Option(help="nucleus sampling mass, > 0 and <= 1 (1: off)")] = 0.9,
             seed: Annotated[int, typer.Option(help="-1: a different draw every time")] = -1,
             model: ModelUri = None, dataset: DatasetName = "shapes") -> None:
    """Continue a prompt with the champion model's text generator."""
    if n < 1:
        raise fail(f"-n must be an integer >= 1 (texts to sample); got {n}")
    params = _check_params(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    out = _predict(model, dataset, [{"task": "generate", "text": prompt, "lang": lang}] * n, params)
    for text in out["answer"]:
        console.print(text)
