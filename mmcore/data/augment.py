"""Light augmentation of contrastive pretraining batches (`pretrain.augment`): a random resized crop and a
horizontal flip that never contradicts a caption.

A mirrored image swaps left and right, so a sample is flipped only when none of its captions, in any
language, mentions a side (`SIDED`); samples that do are never flipped (simpler than swapping the words in
their token ids, and right for every tokenizer). Every draw comes from a torch.Generator the caller seeds per
epoch, a fixed number per image, so a run resumed at an epoch boundary repeats its augmentations exactly.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

# Words for left and right (en, zh/ja, de, fr, es, it). Cautious: "links" or "rightly" also stop a flip,
# which costs a little augmentation and never a wrong pair. Captions in other languages are not read.
SIDED = re.compile(r"\b(?:left|right|links|rechts|gauche|droite|izquierd|derech|sinistr|destr[ao])|[左右]",
                   re.IGNORECASE)
RATIO = (3 / 4, 4 / 3)  # aspect ratios of the crop, as torchvision's RandomResizedCrop


def flippable(captions: list[list[dict]]) -> torch.Tensor:
    """(N,) bool: whether sample i may be mirrored, i.e. none of its captions ({"lang", "text"}) names a side."""
    return torch.tensor([not any(SIDED.search(c["text"]) for c in caps) for caps in captions], dtype=torch.bool)


def crop_boxes(n: int, size: int, scale: tuple[float, float], draws: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of n random crops of a size x size image from `draws` (n, 4) in [0, 1).

    The area share is uniform in `scale` and the log aspect ratio uniform over the part of RATIO at which
    the crop fits inside the image: torchvision's RandomResizedCrop without its retries.
    """
    boxes = []
    for area_u, ratio_u, top_u, left_u in draws.tolist():
        area = scale[0] + (scale[1] - scale[0]) * area_u
        low, high = max(math.log(RATIO[0]), math.log(area)), min(math.log(RATIO[1]), -math.log(area))
        ratio = math.exp(low + (high - low) * ratio_u)
        width = min(size, max(1, round(size * math.sqrt(area * ratio))))
        height = min(size, max(1, round(size * math.sqrt(area / ratio))))
        top, left = int(top_u * (size - height + 1)), int(left_u * (size - width + 1))
        boxes.append((top, left, height, width))
    return boxes


def augment_batch(images: torch.Tensor, may_flip: torch.Tensor, scale: tuple[float, float],
                  gen: torch.Generator) -> torch.Tensor:
    """Random resized crops of `images` (B, 3, S, S) uint8, each mirrored with probability 1/2 where `may_flip`
    (B,) allows it. Returns (B, 3, S, S) uint8 on the images' device."""
    n, size = len(images), images.shape[-1]
    draws = torch.rand((n, 5), generator=gen)  # area, ratio, top, left, flip: five per image, always
    out = []
    for image, (top, left, height, width), flip, ok in zip(images, crop_boxes(n, size, scale, draws[:, :4]),
                                                          draws[:, 4].tolist(), may_flip.tolist(), strict=True):
        crop = image[:, top : top + height, left : left + width]  # (3, h, w)
        if (height, width) != (size, size):
            resized = F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)[0]
            crop = resized.round().clamp(0, 255).to(torch.uint8)
        out.append(crop.flip(-1) if ok and flip < 0.5 else crop)
    return torch.stack(out) if out else images

