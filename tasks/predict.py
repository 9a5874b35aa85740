"""Batch inference tasks over `mmcore.batch`: which model (a registry URI, resolved once to a version and its
digest), its files (downloaded once per version and checked), the scoring itself in an MLflow run linked to
that model version, and the search index extended by newly embedded images as a new version of the model."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
from mlflow.entities import LoggedModelInput
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.logging import get_run_logger

from mmcore import batch
from mmcore.catalog import BundleDir
from mmcore.config import PipelineConfig
from mmcore.io import combined_digest, file_sha256
from mmcore.registry_gate import GateDecision
from mmcore.serving import load_predictor
from mmcore.stages.package import extend_index
from tasks import tracking


@dataclass(frozen=True)
class Model:
    """A model to score with: `uri` as given, and what it resolved to."""

    uri: str
    ref: batch.ModelRef  # registered name, version ("" outside the registry) and digest
    bundle: str  # the local copy of its files
    model_id: str | None  # MLflow's logged-model id: the run's lineage input
    dataset: str  # the experiment its runs go to
    config: dict[str, Any] | None  # the resolved config it was trained with (its metadata)
    aliases: tuple[str, ...] = ()


def default_uri(dataset: str) -> str:
    return f"models:/{PipelineConfig(dataset=dataset).model_name}@champion"


def check_model(uri: str | None, dataset: str) -> None:
    """Raises ValueError, in one line, when `uri` (default: the dataset's @champion) names no model: what
    `mm predict` checks before it starts anything."""
    uri = uri or default_uri(dataset)
    if uri.startswith("models:/"):
        _version(uri)
    elif "://" not in uri and not (Path(uri) / "MLmodel").is_file():
        raise ValueError(f"--model {uri} is not a model folder (no MLmodel file); give models:/<name>@<alias>, "
                         f"models:/<name>/<version> or a saved model's folder")


@task
def resolve_model(uri: str | None, dataset: str, cache: str) -> Model:
    """The model `uri` names (default: the dataset's @champion), its files copied under `cache` once per
    version and checked on every reuse. A `models:/` URI is resolved to its version first, so every row of a
    run is scored by one version even if the alias moves meanwhile."""
    uri = uri or default_uri(dataset)
    name, version, model_id, digest, aliases = "", "", None, "", ()
    if uri.startswith("models:/"):
        found = _version(uri)
        name, version, model_id = found.name, str(found.version), getattr(found, "model_id", None)
        digest, aliases = found.tags.get("model_digest", ""), tuple(found.aliases)
        uri_of_version = f"models:/{name}/{version}"
    else:
        uri_of_version = uri
    folder = _download(uri_of_version, Path(cache), f"{name}-{version}" if version else hashlib.sha256(
        uri.encode()).hexdigest()[:16])
    bundle = BundleDir(folder / "bundle")
    digest = digest or combined_digest([file_sha256(f) for f in bundle.files])  # a model outside the registry
    info = mlflow.models.get_model_info(str(folder / "model"))
    metadata = info.metadata or {}
    model_id = model_id or getattr(info, "model_id", None)  # a SQL registry leaves it off the version
    return Model(uri, batch.ModelRef(name, version, digest), str(bundle.path), model_id,
                 metadata.get("dataset", dataset), metadata.get("config"), aliases)


def _version(uri: str) -> Any:
    """The registered version a models:/name@alias or models:/name/version URI names."""
    rest = uri.removeprefix("models:/")
    client = tracking.client()
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = rest.partition("/")
        if not version.isdigit():
            raise ValueError(f"model URI {uri!r} names no version; use models:/<name>@<alias> or "
                             f"models:/<name>/<version>")
        return client.get_model_version(name, version)
    except MlflowException as exc:
        message = " ".join(str(exc.message).split())
        raise ValueError(f"model {uri} is not in the registry ({message}); run `mm demo` or `mm pipeline` first, "
                         f"or give --model") from None


def _download(uri: str, cache: Path, key: str) -> Path:
    """The model's files in `cache/key` (`model/` as logged, `bundle/` its bundle), downloaded if missing or
    incomplete, by a temporary name and a rename."""
    folder = cache / key
    if all(f.is_file() for f in BundleDir(folder / "bundle").files) and (folder / "model" / "MLmodel").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "download")))
        meta = next(local.rglob(BundleDir(tmp).meta.name), None)
        if meta is None:
            raise ValueError(f"model {uri} holds no mmcore bundle; it is not a model this project "
                             "registered")
        shutil.move(str(meta.parent), tmp / "bundle")
        shutil.move(str(local), tmp / "model")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@task
def score(model: Model, requests_uri: str, task_name: str, out: str, question: str | None = None,
          fmt: str = "auto", k: int = 5, shard_rows: int = batch.SHARD_ROWS, parent: str | None = None
          ) -> dict[str, Any]:
    """Score every input in an MLflow run of the model's experiment, linked to the model version (its logged
    model as the run's input) and to the input (a dataset input with its digest). Returns the report."""
    logger = get_run_logger()
    requests = batch.read_requests(requests_uri, task_name, fmt, question)
    params = {"task": task_name, "input": requests_uri, "out": str(Path(out).resolve()), "model_uri": model.uri,
              "question": question, "format": fmt, "k": k, "shard_rows": shard_rows}
    tags = {"model_name": model.ref.name, "model_version": model.ref.version, "model_digest": model.ref.digest,
            "input_format": requests.describe.get("format", "")}
    with tracking.job_run(model.dataset, "predict", params, tags) as run_id:
        if model.model_id:
            tracking.client().log_inputs(run_id, models=[LoggedModelInput(model.model_id)])
        digest = hashlib.sha256(json.dumps(requests.describe, sort_keys=True).encode()).hexdigest()
        tracking.log_dataset(run_id, "predict-input", requests.root, digest, "inference")
        report = batch.predict(load_predictor(model.bundle), requests, task_name, Path(out), model.ref, k,
                               shard_rows, log=lambda line: logger.info("%s", line))
        tracking.log_metrics(run_id, report.metrics())
        tracking.log_dict(run_id, {"rejects_by_reason": report.rejects_by_reason, "out": str(report.out)},
                          "predict_summary.json")
        logger.info("%d inputs: %d answered, %d rejected; %s", report.rows_in, report.answered, report.rejected,
                    report.out)
    return {"run_id": run_id, "out": str(report.out), "root": requests.root, "rows_in": report.rows_in,
            "answered": report.answered, "rejected": report.rejected, "shards": report.shards,
            "shards_reused": report.shards_reused, "rejects_by_reason": report.rejects_by_reason,
            "model": {"name": model.ref.name, "version": model.ref.version, "digest": model.ref.digest}}


@task
def add_to_index(model: Model, embedded: str, root: str, run_id: str) -> dict[str, Any]:
    """A new version of the model whose search index also ranks the embedded images, registered from the
    predict run: same weights, same test metrics, and the alias of the version it extends (an extended
    @champion is the new @champion)."""
    from tasks.register import register_bundle

    if not model.ref.version or model.config is None:
        raise ValueError(f"--add-to-index needs a registered model (models:/...); {model.uri} is not one")
    cfg = PipelineConfig.model_validate(model.config)
    base = tracking.client().get_model_version(model.ref.name, model.ref.version)
    metrics = tracking.client().get_run(base.run_id).data.metrics if base.run_id else {}
    with tempfile.TemporaryDirectory() as tmp:
        dest = BundleDir(Path(tmp) / "bundle")
        added = extend_index(BundleDir(Path(model.bundle)), dest, pq.read_table(embedded), root)
        digest = combined_digest([model.ref.digest, file_sha256(dest.index)])
        alias = cfg.registry.alias if cfg.registry.alias in model.aliases else cfg.registry.challenger_alias
        reason = (f"the weights of version {model.ref.version}, its search index extended by {added} images "
                  f"(run {run_id})")
        decision = GateDecision(alias == cfg.registry.alias, alias, None, None, None, reason)
        result = register_bundle(cfg, dest.path, metrics, run_id, base.tags.get("test_digest", ""),
                                 base.tags.get("dataset_digest", ""), decision)
    client = tracking.client()
    client.set_model_version_tag(cfg.model_name, result["version"], "model_digest", digest)
    client.set_model_version_tag(cfg.model_name, result["version"], "index_extends", model.ref.version)
    return {**result, "added": added}
