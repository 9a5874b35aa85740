"""Pretrained image weights without a network: torchvision names read from a fake torch hub cache (TORCH_HOME
in tmp_path), local state dict files, and a one-line error for a missing file, a bad checksum or a file that
does not fit. Nothing is downloaded: the weights are randomly initialised models saved by the test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from mmcore.catalog import SECTIONS
from mmcore.config import EncoderConfig, load_config
from mmcore.models import weights as W
from mmcore.models.image_encoders import build_image_encoder

ARCH = "mobilenet_v3_small"  # small: saving and loading its weights is quick


def _saved(model: torch.nn.Module, folder: Path, name: str = "weights.pth") -> tuple[Path, str]:
    """Saves the model's state dict under `name` in `folder`; returns the path and the file's sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(model.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _first_conv(module: torch.nn.Module) -> torch.Tensor:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d)).weight


def test_a_torchvision_name_resolves_to_torchvisions_file_in_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    want = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    for spec in ("ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", "DEFAULT"):
        assert W.hub_file("resnet18", spec)[0] == want
    with pytest.raises(ValueError, match="not weights of resnet18; its weights are ResNet18_Weights"):
        W.hub_file("resnet18", "ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(ValueError, match=r"has no IMAGENET1K_V9; choose one of \['IMAGENET1K_V1', 'DEFAULT'\]"):
        W.hub_file("resnet18", "IMAGENET1K_V9")


def test_hub_weights_with_a_matching_hash_in_their_name_load(tmp_path, monkeypatch):
    """The whole path: name -> hub cache file -> its name's hash checked -> state dict -> encoder. The file
    name is made from the saved file's own sha256, as torchvision names its files."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.get_model("resnet18", weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    path, sha = _saved(reference, folder)
    named = path.rename(folder / f"resnet18-{sha[:8]}.pth")
    monkeypatch.setattr(W, "weights_url", lambda arch, spec: f"https://download.pytorch.org/models/{named.name}")
    torch.manual_seed(1)  # another random initialisation: the weights must come from the file
    encoder = build_image_encoder("resnet18", weights="IMAGENET1K_V1", small_input=False)
    assert torch.equal(_first_conv(encoder), reference.conv1.weight)
    assert torch.equal(encoder.body[1].running_mean, reference.bn1.running_mean)


def test_a_missing_hub_file_is_one_line_naming_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_image_encoder("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    message = str(err.value)
    assert "\n" not in message and "never downloaded" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_a_hub_file_whose_hash_does_not_match_its_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, sha = _saved(torchvision.models.get_model(ARCH, weights=None), tmp_path / "hub" / "checkpoints",
                       W.hub_file(ARCH, "DEFAULT")[0].name)  # torchvision's name, someone else's bytes
    with pytest.raises(ValueError) as err:
        build_image_encoder(ARCH, weights="DEFAULT")
    assert str(err.value).splitlines() == [str(err.value)]
    assert f"{path} has sha256 {sha}, expected 047dcff4" in str(err.value)


def test_the_pretrained_flag_is_an_alias_of_the_default_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert EncoderConfig(pretrained=True).image_weights == "DEFAULT"
    assert EncoderConfig(weights="IMAGENET1K_V1").image_weights == "IMAGENET1K_V1"
    assert EncoderConfig().image_weights is None
    with pytest.raises(ValueError, match="set encoder.weights .* or encoder.pretrained, not both"):
        EncoderConfig(pretrained=True, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="weights_sha256 is set but encoder.weights is not"):
        EncoderConfig(weights_sha256="ab" * 4)


def test_a_local_state_dict_loads_and_its_optional_sha256_is_checked(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(ARCH, weights=None)
    path, sha = _saved(reference, tmp_path / "mine", "backbone-20240101.pt")  # a date, not a hash
    for expected in (None, sha, sha[:8]):
        encoder = build_image_encoder(ARCH, weights=str(path), small_input=False, weights_sha256=expected)
        assert torch.equal(_first_conv(encoder), reference.features[0][0].weight)
    bn = next(m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(0.01)  # pretrained keeps torchvision's own BatchNorm settings
    with pytest.raises(ValueError, match=f"{path} has sha256 {sha}, expected 00000000"):
        build_image_encoder(ARCH, weights=str(path), weights_sha256="00000000")


def test_a_safetensors_file_and_a_wrapped_checkpoint_load(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(ARCH, weights=None)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3}, wrapped)
    assert torch.equal(_first_conv(build_image_encoder(ARCH, weights=str(wrapped))), _first_conv(reference))
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert torch.equal(_first_conv(build_image_encoder(ARCH, weights=str(path))), _first_conv(reference))


def test_unusable_local_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"encoder.weights: .*nope.pth does not exist"):
        build_image_encoder(ARCH, weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.pth does not load as a state dict: UnpicklingError") as err:
        build_image_encoder(ARCH, weights=str(junk))
    assert "\n" not in str(err.value)
    other, _ = _saved(torchvision.models.get_model("resnet18", weights=None), tmp_path)  # another architecture
    with pytest.raises(ValueError, match=f"{other} does not fit {ARCH}: .*weights missing"):
        build_image_encoder(ARCH, weights=str(other))
    with pytest.raises(ValueError, match="smallcnn has no pretrained weights"):
        build_image_encoder("smallcnn", weights="DEFAULT")


def test_the_weights_choice_keys_the_pretrained_encoder():
    keys = {load_config("smoke", {"encoder.image_arch": "resnet18", **extra}).digest(*SECTIONS["pretrain"])
            for extra in ({}, {"encoder.weights": "IMAGENET1K_V1"}, {"encoder.weights": "/w/a.pth"},
                          {"encoder.weights": "/w/a.pth", "encoder.weights_sha256": "ab" * 4})}
    assert len(keys) == 4
