"""Batch inference flow: score a folder, a Parquet table or an s3:// prefix with a registered model, one
Parquet row per input (an answer or a rejection with its reason), optionally adding newly embedded images to
the model's search index.

Run: `mm predict --input data/inbox --task caption --out data/predictions/inbox.parquet`, or the `score-inbox`
deployment in prefect.yaml, which scores a drop folder on a schedule: each run computes only the shards whose
inputs are new or changed, and its output always holds one row per input in the folder.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.env import mm_home
from mmcore import batch
from tasks.predict import add_to_index as extend_index
from tasks.predict import resolve_model, score


@flow(name="batch-predict")
def batch_predict_flow(input: str, out: str, task: str = "caption", model: str | None = None,  # noqa: A002
                       dataset: str = "shapes", question: str | None = None, fmt: str = "auto", k: int = 5,
                       shard_rows: int = batch.SHARD_ROWS, add_to_index: bool = False) -> dict[str, Any]:
    """Score every input at `input` with `model` (default: the dataset's @champion) into `out`.

    task: caption | ask (`question` for every image, else each record's own) | embed | search (query texts).
    `add_to_index` (embed only): register a version of the model whose search index also ranks these images.
    """
    batch.check_task(task)
    if add_to_index and task != "embed":
        raise ValueError(f"add_to_index needs task 'embed' (the images' embeddings); got task {task!r}")
    resolved = resolve_model(model, dataset, str(mm_home() / "models"))
    result = score(resolved, input, task, out, question, fmt, k, shard_rows)
    if add_to_index:
        result["index"] = extend_index(resolved, result["out"], result["root"], result["run_id"])
    return result


if __name__ == "__main__":
    import sys

    batch_predict_flow(*sys.argv[1:3])
