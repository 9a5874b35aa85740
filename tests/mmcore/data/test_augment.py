"""Pretraining augmentation: crops inside the image, flips only where no caption names a side, seeded draws."""

from __future__ import annotations

import pytest
import torch

from mmcore.data.augment import augment_batch, crop_boxes, flippable


def _caps(*texts: str, lang: str = "en") -> list[dict]:
    return [{"lang": lang, "text": t} for t in texts]


def test_samples_whose_captions_name_a_side_are_not_flippable():
    captions = [
        _caps("a red circle"),
        _caps("a red circle on the left"),
        _caps("a small square", "the square is at the top RIGHT"),  # any caption of the sample counts
        _caps("一个红色圆形在左侧", lang="zh"),
        _caps("ein Kreis links", lang="de"),
        _caps("a bright light", "copyright notice"),  # words that only contain "right"
        [],
    ]
    assert flippable(captions).tolist() == [True, False, False, False, False, True, True]


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.5, 0.5), (0.9, 1.0), (1.0, 1.0)])
def test_crops_lie_inside_the_image_with_the_area_asked_for(scale):
    size = 32
    boxes = crop_boxes(200, size, scale, torch.rand((200, 4), generator=torch.Generator().manual_seed(0)))
    for top, left, height, width in boxes:
        assert 0 <= top and top + height <= size and 0 <= left and left + width <= size
        assert 3 / 4 - 0.1 <= width / height <= 4 / 3 + 0.1 or min(width, height) < 8  # rounding of small crops
        assert scale[0] - 0.1 <= width * height / size**2 <= scale[1] + 0.1
    if scale == (1.0, 1.0):
        assert set(boxes) == {(0, 0, size, size)}


def test_augmentation_is_a_function_of_the_generator_and_keeps_shape_and_dtype():
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ok = torch.ones(6, dtype=torch.bool)
    first = augment_batch(images, ok, (0.5, 1.0), torch.Generator().manual_seed(7))
    again = augment_batch(images, ok, (0.5, 1.0), torch.Generator().manual_seed(7))
    assert first.shape == images.shape and first.dtype == torch.uint8 and torch.equal(first, again)
    assert not torch.equal(first, images)


def test_with_full_crops_an_image_is_either_itself_or_its_mirror_and_only_if_allowed():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    ok = torch.arange(64) % 2 == 0
    out = augment_batch(images, ok, (1.0, 1.0), torch.Generator().manual_seed(3))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert (mirrored | same).all()
    assert not mirrored[~ok].any()  # a sample that may not be flipped never is
    assert 8 <= int(mirrored[ok].sum()) <= 24  # about half of those that may be


def test_the_augmentation_settings_are_checked():
    from mmcore.config import PretrainConfig

    assert PretrainConfig().augment is False and PretrainConfig().crop_scale == (0.9, 1.0)
    for bad in ((0.0, 1.0), (0.8, 0.5), (0.5, 1.2)):
        with pytest.raises(ValueError, match=r"crop_scale must satisfy 0 < min <= max <= 1"):
            PretrainConfig(crop_scale=bad)
