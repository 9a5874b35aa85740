"""Red or blue images asked "what colour is it?": only the image tells the answer. Shared by the pretraining
objectives' tests."""

from __future__ import annotations

import numpy as np

from mmcore.data.dataset import SampleSet

QUESTION = [2, 5, 6, 3]  # "what colour is it?", asked of every image


def colour_set(n: int, seed: int, split: str, noise: int = 40, captioned: bool = False) -> SampleSet:
    """`n` images, all red or all blue, plus uniform noise up to `noise`. With `captioned`, each has the caption
    "picture <i>" (a word of its own per image, which a contrastive loss can match by the image's noise
    pattern), never naming its colour."""
    rng = np.random.default_rng(seed)
    red = rng.random(n) < 0.5
    images = np.zeros((n, 3, 32, 32), np.uint8)
    images[red, 0] = 200
    images[~red, 2] = 200
    images = np.clip(images + rng.integers(0, noise, images.shape), 0, 255).astype(np.uint8)
    captions = [[{"lang": "en", "text": f"picture {i}"}] for i in range(n)] if captioned else [[]] * n
    caption_ids = [[[2, 10 + i, 3]] for i in range(n)] if captioned else [[]] * n
    qa = [[{"question": "what colour is it?", "answer": "red" if r else "blue", "type": "color"}] for r in red]
    return SampleSet([f"{split}{i}" for i in range(n)], [split] * n, images, captions, caption_ids, qa,
                     [[QUESTION] for _ in range(n)])
