"""The predictor over a model bundle (encoder, heads, tokenizer, image index; `mmcore.stages.package` writes it)."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, UnidentifiedImageError

from mmcore.catalog import BundleDir
from mmcore.data.images import to_rgb_square
from mmcore.data.shards import vectors_to_numpy
from mmcore.io import read_json
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.contrastive import load_encoder
from mmcore.training.heads import load_heads
from mmcore.training.loop import pad_batch


@dataclass
class Match:
    sample_id: str
    image_path: str
    score: float


class ImageError(ValueError):
    """An image that cannot be used: `index` is its place in the batch, `reason` says why in one line."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"image {index} {reason}")
        self.index, self.reason = index, reason


class PixelBomb(ValueError):
    """An image whose header claims more pixels than Pillow opens at all: a decompression bomb."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from an image file's header, without decoding its pixels.

    Raises ValueError with a reason that reads after "the image": not an image, a broken header, or more
    pixels than Pillow opens at all (twice `Image.MAX_IMAGE_PIXELS`, a decompression bomb).
    """
    try:
        with warnings.catch_warnings():
            # the caller compares the size with its own limit, which may be above Pillow's warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"claims {int(found.group(1))} pixels" if found else "claims too many pixels"
        raise PixelBomb(f"{claimed}, a decompression bomb Pillow refuses to open") from None
    except UnidentifiedImageError:
        raise ValueError("is not an image file Pillow can read (PNG, JPEG, GIF, WebP, BMP, TIFF, ...)") from None
    except Exception as exc:  # Pillow raises many kinds on hostile bytes (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"has a broken header ({_one_line(exc)})") from None


def decode_image(data: bytes, size: int, max_pixels: int | None = None, resize: str = "squash") -> np.ndarray:
    """An image file's bytes -> (3, size, size) uint8 RGB, never decoding more than `max_pixels` pixels.

    `resize` is the model's ingest.resize (crop, pad or squash), so a request's image is made square as the
    training images were (`to_rgb_square`, the one preprocessing).

    The pixel count comes from the header, before any decoding; `max_pixels=None` leaves the limit to
    Pillow's decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`), made an error here instead of a warning.
    Raises ValueError with a one-line reason that reads after "the image".
    """
    width, height = image_size(data)
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(f"is {width} x {height} = {width * height} pixels; at most {max_pixels} allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error" if max_pixels is None else "ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(to_rgb_square(img, size, resize)).transpose(2, 0, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"is {width} x {height} pixels, above Pillow's decompression-bomb limit "
                         f"{Image.MAX_IMAGE_PIXELS}") from None
    except Exception as exc:  # truncated or corrupt pixel data: Pillow raises many kinds (OSError, struct.error, ...)
        raise ValueError(f"could not be decoded ({_one_line(exc)})") from None


def _one_line(exc: BaseException, width: int = 160) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= width else text[:width - 3] + "..."


def rank(index: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each query (Q, D) over the index rows (N, D) by inner product: (values, indices), (Q, k).

    The scores are one matrix product in numpy: for one query over a 1M-row index its BLAS takes about 25 ms
    on 2 cores against about 65 ms for torch's, whichever way the product is written (BENCHMARKS.md, "Search
    latency"); it is a read of the whole index, so memory bandwidth bounds it.
    """
    scores = torch.from_numpy(index.numpy() @ queries.numpy().T).T  # (Q, N)
    return scores.topk(min(k, scores.shape[1]), dim=-1)


class Predictor:
    """Answers caption, VQA and text-to-image search requests from a bundle folder.

    `max_image_pixels`: no image with more pixels (width x height, read from its header) is decoded; None
    leaves the limit to Pillow's decompression-bomb guard. mmcore/serving.py checks the model's own limits
    before anything reaches the predictor.
    """

    def __init__(self, bundle_dir: str | Path, device: str = "cpu", max_image_pixels: int | None = None):
        bundle = BundleDir(Path(bundle_dir))
        missing = [f.name for f in bundle.files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"model bundle {bundle} lacks {missing}")
        self.device = torch.device(device)
        self.meta = read_json(bundle.meta)
        self.max_image_pixels = max_image_pixels
        self.encoder = load_encoder(bundle.encoder, self.device)
        self.heads = load_heads(bundle.heads, self.device)
        self.tokenizer = TextTokenizer.from_file(bundle.tokenizer)
        index = pq.read_table(bundle.index)
        self.index_ids = index["sample_id"].to_pylist()
        self.index_paths = index["image_path"].to_pylist()
        self.index_emb = torch.from_numpy(vectors_to_numpy(index["image_embedding"]).copy())

    def _images(self, images: list[bytes]) -> torch.Tensor:
        """(B, 3, S, S) uint8; raises ImageError naming the first image that cannot be used."""
        arrays = []
        for i, data in enumerate(images):
            try:
                arrays.append(self.pixels(data))
            except ValueError as exc:
                raise ImageError(i, str(exc)) from None
        return torch.from_numpy(np.stack(arrays)).to(self.device)

    def pixels(self, data: bytes) -> np.ndarray:
        """One image file -> the (3, S, S) uint8 array the model sees; ValueError (a one-line reason that reads
        after "the image") when it cannot be used."""
        # bundles from before ingest.resize existed squashed their images
        return decode_image(data, self.meta["image_size"], self.max_image_pixels, self.meta.get("resize", "squash"))

    @torch.no_grad()
    def caption(self, images: list[bytes]) -> list[str]:
        return self.caption_pixels(self._images(images))

    @torch.no_grad()
    def caption_pixels(self, pixels: torch.Tensor) -> list[str]:
        """Captions of (B, 3, S, S) uint8 images (`pixels` of each)."""
        if self.heads.captioner is None:
            raise RuntimeError("this model has no caption head")
        feats = self.encoder.encode_image(pixels.to(self.device))
        ids = self.heads.captioner.generate(feats.grid, feats.pooled, self.tokenizer.bos_id, self.tokenizer.eos_id,
                                            self.meta["max_caption_len"])
        return [self.tokenizer.decode(row) for row in ids.cpu().tolist()]

    @torch.no_grad()
    def answer(self, images: list[bytes], questions: list[str]) -> list[tuple[str, float]]:
        if len(images) != len(questions):
            raise ValueError(f"need one question per image, got {len(images)} images and {len(questions)}")
        return self.answer_pixels(self._images(images), questions)

    @torch.no_grad()
    def answer_pixels(self, pixels: torch.Tensor, questions: list[str]) -> list[tuple[str, float]]:
        """(answer, probability) for each of (B, 3, S, S) uint8 images and its question."""
        if self.heads.vqa is None:
            raise RuntimeError("this model has no VQA head")
        feats = self.encoder.encode_image(pixels.to(self.device))
        q = pad_batch(self.tokenizer.encode(questions, self.meta["max_text_len"])).to(self.device)
        probs = self.heads.vqa(feats.grid, feats.pooled, q).softmax(-1).cpu()
        best = probs.max(dim=-1)
        return [(self.heads.answers[i], float(p)) for p, i in zip(best.values, best.indices.tolist(), strict=True)]

    def _lang_index(self, lang: str) -> int:
        if lang not in self.heads.text_langs:
            raise ValueError(f"unknown language {lang!r}; this model knows {self.heads.text_langs}")
        return self.heads.text_langs.index(lang)

    @torch.no_grad()
    def translate(self, texts: list[str], to_lang: str) -> list[str]:
        """Translations of `texts` into `to_lang` (one of the caption languages, e.g. en or zh)."""
        if self.heads.translator is None:
            raise RuntimeError("this model has no translation head")
        ids = pad_batch(self.tokenizer.encode(texts, self.meta["max_text_len"])).to(self.device)
        lang = torch.full((len(texts),), self._lang_index(to_lang), dtype=torch.long, device=self.device)
        out = self.heads.translator.generate(ids, lang, self.tokenizer.bos_id, self.tokenizer.eos_id,
                                             self.meta["max_text_len"])
        return [self.tokenizer.decode(row) for row in out.cpu().tolist()]

    @torch.no_grad()
    def generate(self, prompts: list[str], lang: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None) -> list[str]:
        """Continues each prompt in `lang` by sampling (temperature, top-k, top-p); a seed makes it repeatable."""
        if self.heads.generator is None:
            raise RuntimeError("this model has no generation head")
        if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"need temperature > 0, 0 < top_p <= 1 and top_k >= 0; got {temperature}, {top_p}, "
                             f"{top_k}")
        prompt_ids = [ids[:-1] for ids in self.tokenizer.encode(prompts, self.meta["max_text_len"])]  # no [EOS]
        lang_idx = torch.full((len(prompts),), self._lang_index(lang), dtype=torch.long, device=self.device)
        gen = torch.Generator(device=self.device)
        if seed is None:
            gen.seed()  # a fresh draw every call
        else:
            gen.manual_seed(seed)
        out = self.heads.generator.generate(lang_idx, prompt_ids, self.tokenizer.eos_id, self.meta["max_text_len"],
                                            temperature, top_k, top_p, gen)
        return [self.tokenizer.decode(row) for row in out]

    @torch.no_grad()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, D) float32 unit-length image embeddings of (B, 3, S, S) uint8 images: what search ranks."""
        return self.encoder.encode_image(pixels.to(self.device)).embedding.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def search(self, texts: list[str], k: int = 5) -> list[list[Match]]:
        if k < 1:
            raise ValueError(f"need k >= 1 search results per text; got {k}")
        ids = pad_batch(self.tokenizer.encode(texts, self.meta["max_text_len"])).to(self.device)
        values, indices = rank(self.index_emb, self.encoder.encode_text(ids).cpu(), k)
        return [[Match(self.index_ids[j], self.index_paths[j], float(s)) for s, j in zip(vals.tolist(), idx.tolist(),
                                                                                       strict=True)]
                for vals, idx in zip(values, indices, strict=True)]
