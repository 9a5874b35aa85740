"""Training the text-only heads: the translator and the text generator (evaluated in `mmcore.evaluation`).

Both learn from the captions alone (no image features). Translation pairs come from parallel captions:
the i-th caption of one language of an image is taken to translate the i-th caption of the other, as
the synthetic shapes data writes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from mmcore.config import HeadsConfig
from mmcore.features import FeatureSet
from mmcore.losses import sequence_loss
from mmcore.models.builders import HeadDims, build_generator, build_translator
from mmcore.models.text_heads import TextGenerator, Translator
from mmcore.training.loop import EpochCallback, epoch_order, fit, pad_batch, seed_everything, stage_fit_config

Example = tuple[list[int], int, list[int]]  # (source ids, [] for the generator; language index; target ids)


def head_dims(data: FeatureSet, vocab_size: int, cfg: HeadsConfig) -> HeadDims:
    """The dimensions of heads trained on `data`'s features with `cfg`'s widths."""
    return HeadDims(vocab_size, data.grid.shape[1], data.pooled.shape[1], data.grid.shape[2], cfg.hidden,
                    cfg.word_dim)


def _langs_present(data: FeatureSet) -> list[str]:
    return sorted({c["lang"] for caps in data.captions for c in caps})


def parallel_index(data: FeatureSet, src: str, tgt: str) -> list[tuple[int, int, int]]:
    """(sample, caption index of the source, caption index of its translation) of every parallel pair."""
    out = []
    for i, caps in enumerate(data.captions):
        s = [j for j, c in enumerate(caps) if c["lang"] == src]
        t = [j for j, c in enumerate(caps) if c["lang"] == tgt]
        if len(s) == len(t):  # otherwise which caption translates which is unknown: the sample is left out
            out.extend((i, a, b) for a, b in zip(s, t, strict=True))
    return out


def parallel_pairs(data: FeatureSet, src: str, tgt: str) -> list[tuple[list[int], list[int]]]:
    """(source ids, target ids): the i-th `src` caption of a sample paired with its i-th `tgt` caption.

    Assumes captions are parallel by position, as in the shapes data; samples with a different number
    of captions in the two languages are skipped.
    """
    return [(data.caption_ids[i][a], data.caption_ids[i][b]) for i, a, b in parallel_index(data, src, tgt)]


def _translation_examples(data: FeatureSet, langs: Sequence[str]) -> list[Example]:
    return [(s, k, t) for k, tgt in enumerate(langs) for src in langs if src != tgt
            for s, t in parallel_pairs(data, src, tgt)]


def _lm_examples(data: FeatureSet, langs: Sequence[str]) -> list[Example]:
    index = {lang: k for k, lang in enumerate(langs)}
    return [([], index[c["lang"]], ids) for caps, cids in zip(data.captions, data.caption_ids, strict=True)
            for c, ids in zip(caps, cids, strict=True) if c["lang"] in index]


def _fit_text(model: Translator | TextGenerator, examples: list[Example], val_examples: list[Example],
              cfg: HeadsConfig, device: torch.device, monitor: str, on_epoch: EpochCallback | None) -> None:
    """Teacher-forced training on (source, language, target) examples, batches of similar lengths."""

    def loss(chunk: list[Example]) -> dict[str, torch.Tensor]:
        lang = torch.tensor([e[1] for e in chunk], device=device)
        tgt = pad_batch([e[2] for e in chunk]).to(device)  # (B, T): [BOS] w1 .. wn [EOS] pad
        if isinstance(model, Translator):
            logits = model(pad_batch([e[0] for e in chunk]).to(device), lang, tgt[:, :-1])
        else:
            logits = model(lang, tgt[:, :-1])
        return sequence_loss(logits, tgt[:, 1:])

    def batches(epoch: int) -> Iterator[list[Example]]:
        order = epoch_order(len(examples), cfg.seed, epoch).tolist()
        # Sort each window of 8 batches by length: little padding, yet batches stay shuffled.
        window = cfg.batch_size * 8
        chunks = []
        for w in range(0, len(order), window):
            part = sorted(order[w : w + window], key=lambda j: (len(examples[j][0]), len(examples[j][2])))
            chunks += [part[s : s + cfg.batch_size] for s in range(0, len(part), cfg.batch_size)]
        for c in torch.randperm(len(chunks), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist():
            yield [examples[j] for j in chunks[c]]

    def validate() -> dict[str, float]:
        if not val_examples:
            return {}
        terms = [float(loss(val_examples[s : s + 512])["loss"]) for s in range(0, len(val_examples), 512)]
        return {monitor: sum(terms) / len(terms)}

    steps = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    fit(model, stage_fit_config(cfg, steps, monitor, "min", bool(val_examples)), batches, loss, validate,
        on_epoch=on_epoch)


def train_translator(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
                     langs: Sequence[str] = ("en", "zh"), on_epoch: EpochCallback | None = None) -> Translator:
    """One translator for every direction between `langs`, on the parallel training captions."""
    seed_everything(cfg.seed)
    examples, val_examples = _translation_examples(train, langs), _translation_examples(val, langs)
    if not examples:
        raise ValueError(f"no parallel captions between {list(langs)} in the train split: the translator needs "
                         f"captions in at least two of them per image; the data has {_langs_present(train)}")
    model = build_translator(head_dims(train, vocab_size, cfg), len(langs)).to(device)
    _fit_text(model, examples, val_examples, cfg, device, "val_translation_loss", on_epoch)
    return model


def train_generator(train: FeatureSet, val: FeatureSet, cfg: HeadsConfig, vocab_size: int, device: torch.device,
                    langs: Sequence[str] = ("en", "zh"), on_epoch: EpochCallback | None = None) -> TextGenerator:
    """A language model over all training captions in `langs`, told which language it writes."""
    seed_everything(cfg.seed)
    examples, val_examples = _lm_examples(train, langs), _lm_examples(val, langs)
    if not examples:
        raise ValueError(f"no training captions in {list(langs)}; the data has {_langs_present(train)}")
    model = build_generator(head_dims(train, vocab_size, cfg), len(langs)).to(device)
    _fit_text(model, examples, val_examples, cfg, device, "val_generation_loss", on_epoch)
    return model
