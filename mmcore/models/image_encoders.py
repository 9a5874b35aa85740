"""CNN image encoders by name: torchvision architectures (or a small CNN) that return grid features."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.models.weights import load_weights

# ImageNet statistics: the usual normalisation, and the one pretrained torchvision weights expect.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
         "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "regnet_x_400mf", "smallcnn")


class ImageFeatures(NamedTuple):
    grid: torch.Tensor  # (B, G, g, g) spatial features pooled to a fixed grid (G = grid_channels)
    pooled: torch.Tensor  # (B, C) global average of the last feature map (C = out_channels)


class ImageEncoder(nn.Module):
    """Runs a convolutional body (an nn.Sequential) on uint8 images; pools features to a fixed grid.

    With `multiscale`, the grid holds the last output at every resolution below the input's,
    concatenated: deep layers say what is where, shallow ones keep colour and fine shape, which a
    contrastive objective alone may leave out of the last layer.
    """

    def __init__(self, body: nn.Sequential, out_channels: int, grid: int = 2, multiscale: bool = False):
        super().__init__()
        self.body = body.to(memory_format=torch.channels_last)
        self.out_channels = out_channels
        self.grid = grid
        self.multiscale = multiscale
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            was_training = self.training
            self.eval()
            self.grid_channels = self(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).grid.shape[1]
            self.train(was_training)

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        # The one input normalisation, for pretraining, extraction and serving alike, with or without
        # pretrained weights: ImageNet mean/std, what torchvision's weights were trained on.
        x = images.float().div(255.0)  # (B, 3, H, W) uint8 -> [0, 1]
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        if not self.multiscale:
            fmap = self.body(x)  # (B, C, h, w)
            return ImageFeatures(F.adaptive_avg_pool2d(fmap, self.grid), fmap.mean(dim=(2, 3)))
        full, taps, prev = x.shape[-1], [], None
        for layer in self.body:
            out = layer(x if prev is None else prev)
            if prev is not None and out.shape[-1] != prev.shape[-1] and prev.shape[-1] < full:
                taps.append(F.adaptive_avg_pool2d(prev, self.grid))  # last output at that resolution
            prev = out
        taps.append(F.adaptive_avg_pool2d(prev, self.grid))
        return ImageFeatures(torch.cat(taps, dim=1), prev.mean(dim=(2, 3)))


def _small_cnn() -> tuple[nn.Module, int]:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 256)), 256


def _load_torchvision(name: str, weights: str | None, weights_sha256: str | None) -> nn.Module:
    """A torchvision model, randomly initialised or with pretrained `weights` from a local file (never downloaded)."""
    import torchvision  # here, not at module level: importing it costs ~1.6 s (it loads torch._dynamo)

    model = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        load_weights(model, name, weights, weights_sha256)
    return model


def _halve_stem_stride(model: nn.Module) -> None:
    """Makes the first convolution stride 1: ImageNet stems downsample 224 px inputs 4x before any
    block, which leaves a 64 px image at 16 px and loses the small shapes and positions it shows."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.stride = (1, 1)


def build_image_encoder(name: str = "resnet18", grid: int = 2, weights: str | None = None,
                        small_input: bool = True, multiscale: bool = False,
                        weights_sha256: str | None = None) -> ImageEncoder:
    """Builds an encoder by architecture name; `weights` loads pretrained weights from a local file
    (mmcore/models/weights.py: a torchvision weights name read from the torch hub cache, or a path).

    `small_input` adapts a torchvision architecture to small (32-96 px) images by making its first
    convolution stride 1 (4x the compute of the ImageNet stem at the same size).
    """
    if name not in ARCHS:
        raise ValueError(f"unknown image architecture {name!r}; choose one of {list(ARCHS)}")
    if name == "smallcnn":
        if weights is not None:
            raise ValueError("smallcnn has no pretrained weights; set encoder.weights: null and encoder.pretrained: "
                             "false")
        body, channels = _small_cnn()
        return ImageEncoder(body, channels, grid, multiscale)
    model = _load_torchvision(name, weights, weights_sha256)
    if small_input:
        _halve_stem_stride(model)
    if hasattr(model, "features"):  # mobilenet / efficientnet: `.features` is the convolutional body
        body = model.features
    else:  # resnet / regnet / shufflenet: everything before global pooling and the classifier
        body = nn.Sequential(*(child for key, child in model.named_children() if key not in {"avgpool", "fc"}))
    channels = [m for m in body.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    if weights is None:
        # Some torchvision models (MobileNetV3, EfficientNet) use BatchNorm momentum 0.01, tuned for
        # ImageNet-length runs; on a few hundred steps from scratch their running statistics lag so
        # far behind that eval-mode features collapse. 0.1 is PyTorch's default.
        for m in body.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return ImageEncoder(body, channels, grid, multiscale)
