"""Pretrained image weights from local files only, checked against a sha256 before they are read.

`encoder.weights` names them one of two ways:

- a torchvision weights name (`ResNet18_Weights.IMAGENET1K_V1`, `IMAGENET1K_V1` or `DEFAULT`, of the encoder's
  architecture): the file torchvision would download, read from the torch hub cache,
  `$TORCH_HOME/hub/checkpoints/<file>` (e.g. `resnet18-f37072fd.pth`). Its name carries the first hex digits
  of its sha256 (torch.hub's convention), which the file must match.
- a path to a state dict (`.pth`/`.pt` saved with torch.save, or `.safetensors`), checked against
  `encoder.weights_sha256` when given (its name is not read for a hash: `run-20240101.pt` is not one).

Nothing is ever downloaded: a missing file is an error that says where to put it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from mmcore.io import file_sha256

# Upper-case member of a weights enum, optionally after its class: IMAGENET1K_V1, ResNet18_Weights.DEFAULT.
_NAME = re.compile(r"^(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*$")
# torch.hub's rule (HASH_REGEX): the hex digits between the last "-" and the extension are a sha256 prefix.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
# The ImageNet classifiers of torchvision models: the encoder drops them, so their weights are not needed.
_CLASSIFIER = ("fc.", "classifier.")


def is_torchvision_name(spec: str) -> bool:
    return bool(_NAME.match(spec))


def weights_url(arch: str, spec: str) -> str:
    """The download URL of torchvision weights `spec` (a weights name) of architecture `arch`."""
    import torchvision  # here, not at module level: importing it is slow

    enum = torchvision.models.get_model_weights(arch)
    owner, _, member = spec.rpartition(".")
    if owner and owner != enum.__name__:
        raise ValueError(f"encoder.weights {spec!r} are not weights of {arch}; its weights are {enum.__name__}")
    if member not in enum.__members__:
        raise ValueError(f"encoder.weights {spec!r}: {enum.__name__} has no {member}; choose one of "
                         f"{list(enum.__members__)}")
    return enum.__members__[member].url


def hub_file(arch: str, spec: str) -> tuple[Path, str]:
    """(path in the torch hub cache, download URL) of torchvision weights `spec`: the file torchvision would
    download, under its own name, in $TORCH_HOME/hub/checkpoints."""
    url = weights_url(arch, spec)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name, url


def weights_file(arch: str, spec: str) -> Path:
    """The local file `spec` names (see the module docstring); FileNotFoundError saying where to put it."""
    if is_torchvision_name(spec):
        path, url = hub_file(arch, spec)
        if not path.is_file():
            raise FileNotFoundError(f"encoder.weights {spec!r}: {path} does not exist and weights are never "
                                    f"downloaded; fetch {url} where there is a network and copy it to that path "
                                    "(TORCH_HOME sets the folder above hub/checkpoints)")
        return path
    path = Path(os.path.expanduser(spec))
    if not path.is_file():
        raise FileNotFoundError(f"encoder.weights: {path} does not exist (a .pth/.pt/.safetensors state dict, "
                                "or a torchvision weights name such as IMAGENET1K_V1)")
    return path


def check_sha256(path: Path, expected: str | None, hash_in_name: bool = False) -> None:
    """Raises ValueError when the file's sha256 does not start with `expected` or, with `hash_in_name`, with
    the hex digits torch.hub's naming puts in the file name (a hub file without them is not checked by name)."""
    in_name = _HASH_IN_NAME.search(path.name) if hash_in_name else None
    wanted = [h for h in (expected, in_name.group(1) if in_name else None) if h]
    if not wanted:
        return
    actual = file_sha256(path)
    for prefix in wanted:
        if not actual.startswith(prefix.lower()):
            raise ValueError(f"weights file {path} has sha256 {actual}, expected {prefix}: a damaged or different "
                             "file; replace it, or fix encoder.weights_sha256")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a state dict, maybe under "state_dict" or "model"; DDP's "module."
    prefixes removed). A file that does not read is a one-line ValueError naming it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # the minilm extra installs it

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ValueError(f"{path}: reading .safetensors needs pip install safetensors") from None
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"weights file {path} does not load as a state dict: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, arch: str, spec: str, sha256: str | None = None) -> Path:
    """Loads pretrained weights `spec` into the torchvision `model` (all but its classifier); returns the file.

    Every weight of the convolutional body must be in the file, with its shape; a file for another
    architecture is a one-line ValueError.
    """
    path = weights_file(arch, spec)
    check_sha256(path, sha256, hash_in_name=is_torchvision_name(spec))
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(_CLASSIFIER)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise ValueError(f"weights file {path} does not fit {arch}: {first}") from None
    missing = [k for k in missing if not k.startswith(_CLASSIFIER)]
    if missing or unexpected:
        raise ValueError(f"weights file {path} does not fit {arch}: {len(missing)} weights missing "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    return path
