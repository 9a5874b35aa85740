"""Pretrained torchvision weights: loaded from the user's torch hub cache, a clear error when unusable.

Both tests stay offline: the weights file is put in a temporary TORCH_HOME under the name torchvision
looks for, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from mmcore.models.image_encoders import build_image_encoder

ARCH = "mobilenet_v3_small"


def _cached_weights_path(torch_home: Path) -> Path:
    url = torchvision.models.get_model_weights(ARCH).DEFAULT.url
    return torch_home / "hub" / "checkpoints" / Path(url).name


def test_pretrained_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.get_model(ARCH, weights=None)
    path = _cached_weights_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    encoder = build_image_encoder(ARCH, pretrained=True, small_input=False)
    first_conv = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first_conv.weight, reference.features[0][0].weight)
    bn = next(m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(0.01)  # pretrained keeps torchvision's own BatchNorm settings


def test_unusable_pretrained_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = _cached_weights_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"could not load pretrained torchvision weights .*hub cache"):
        build_image_encoder(ARCH, pretrained=True)
    with pytest.raises(ValueError, match="smallcnn has no pretrained weights"):
        build_image_encoder("smallcnn", pretrained=True)
