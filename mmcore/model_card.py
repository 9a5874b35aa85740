"""The model card of a registered model: what it answers, how well (each test metric beside its baseline), what
it was trained on and with, where its code came from, and how to use it. Plain markdown: logged with the model
(`model_card.md` among its artifacts, so it travels wherever the model is deployed) and shown as the registered
version's description in the MLflow UI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmcore.config import PipelineConfig
from mmcore.report import METRIC_NOTES, metric_rows

# A task the model answers, and the metric prefix that shows it was trained and evaluated.
TASKS = (("search", "t2i_r1", "text-to-image search over the images it was trained on"),
         ("caption", "caption_", "a caption for an image"),
         ("ask", "vqa_acc", "an answer to a question about an image"),
         ("translate", "translation_", "translation between the caption languages"),
         ("generate", "generation_", "text continuing a prompt"))


@dataclass(frozen=True)
class Provenance:
    """Where a model came from: the data it was trained and scored on, and the code that trained it."""

    dataset_digest: str
    test_digest: str
    git_commit: str | None = None  # None when it did not run from a git checkout
    git_dirty: bool = False
    run_id: str | None = None


def model_card(name: str, cfg: PipelineConfig, metrics: Mapping[str, float], origin: Provenance,
               limits: Mapping[str, Any]) -> str:
    """The card of model `name` trained with `cfg`, scored `metrics` on its test split."""
    tasks = [(task, what) for task, key, what in TASKS if any(k.startswith(key) for k in metrics)]
    lines = [f"# {name}", "",
             f"An image and text model trained by mmcore-pipelines on the `{cfg.dataset}` dataset. It answers:", ""]
    lines += [f"- `{task}`: {what}" for task, what in tasks]
    lines += ["", "## Test metrics", "", f"On the test split ({int(metrics.get('test_images', 0))} images), each "
              "beside the baseline it should be read against (chance, the majority answer, a constant caption):", "",
              "| metric | value | baseline |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.4f} | {'' if b is None else f'{b:.4f}'} |" for k, v, b in metric_rows(dict(metrics))]
    for note in (note for prefix, note in METRIC_NOTES.items() if any(k.startswith(prefix) for k in metrics)):
        lines += ["", note]
    enc, ing = cfg.encoder, cfg.ingest
    lines += ["", "## Data", "",
              f"- dataset `{cfg.dataset}`, source format `{ing.format}`, digest `{origin.dataset_digest}`",
              f"- test split digest `{origin.test_digest}` (the champion gate compares models on equal ones)",
              f"- images {ing.image_size} px, resized by `{ing.resize}`",
              "", "## Model", "",
              f"- image encoder `{enc.image_arch}`" + (f" from weights `{enc.weights}`" if enc.weights else
                                                        " trained from scratch"),
              f"- text encoder `{enc.text_encoder}`, embeddings of {enc.embed_dim} dimensions",
              f"- pretraining: objective `{cfg.pretrain.objective}`, {cfg.pretrain.epochs} epochs, batch "
              f"{cfg.pretrain.batch_size}, seed {cfg.pretrain.seed}",
              f"- heads: {cfg.heads.epochs} epochs, captions in `{cfg.heads.caption_lang}`",
              "- the whole resolved config is in the model's metadata (`config` in MLmodel)",
              "", "## Provenance", ""]
    commit = origin.git_commit or "unknown (not run from a git checkout)"
    lines += [f"- code: git commit `{commit}`" + (" with uncommitted changes" if origin.git_dirty else "")]
    if origin.run_id:
        lines += [f"- MLflow run `{origin.run_id}`"]
    lines += ["", "## Use", "",
              "```python", "import mlflow.pyfunc, pandas as pd",
              f'model = mlflow.pyfunc.load_model("models:/{name}@champion")',
              'model.predict(pd.DataFrame([{"task": "search", "text": "a red ball"}]), params={"k": 5})', "```", "",
              "The model's code travels with it and its requirements.txt pins what loading needs: in an environment "
              f"built from that file alone, `mlflow models serve -m models:/{name}@champion --env-manager local` "
              "serves it over HTTP. Requests beyond these limits are refused with a 400: "
              + ", ".join(f"{k} {v}" for k, v in sorted(limits.items())) + "."]
    return "\n".join(lines) + "\n"
