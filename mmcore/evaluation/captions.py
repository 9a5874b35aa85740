"""Caption quality of the caption decoder: n-gram overlap with the references and diversity."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from mmcore.features import FeatureSet
from mmcore.metrics import caption_bleu, cider_d, distinct_n, rouge_l
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.heads import Heads, caption_pairs


def generate_captions(heads: Heads, data: FeatureSet, tokenizer: TextTokenizer, device: torch.device,
                      max_len: int = 32, batch_size: int = 256, beam_size: int = 1,
                      length_penalty: float = 1.0) -> list[str]:
    """One caption per image of `data` (greedy, or beam search if beam_size > 1)."""
    out: list[str] = []
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(s + batch_size, len(data))))
        grid = torch.from_numpy(data.grid[idx]).to(device)
        pooled = torch.from_numpy(data.pooled[idx]).to(device)
        ids = heads.captioner.generate(grid, pooled, tokenizer.bos_id, tokenizer.eos_id, max_len,
                                       beam_size=beam_size, length_penalty=length_penalty)
        out.extend(tokenizer.decode(row) for row in ids.cpu().tolist())
    return out


def evaluate_captions(heads: Heads, train: FeatureSet, test: FeatureSet, tokenizer: TextTokenizer,
                      device: torch.device, max_len: int = 32, beam_size: int = 1,
                      length_penalty: float = 1.0) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """BLEU-1..4, CIDEr-D and ROUGE-L of greedy captions as coco-caption scores them (on its PTB tokens), and
    distinct-2 of the captions generated.

    Baseline: the most frequent training caption, predicted for every image.
    """
    lang = heads.caption_lang
    keep = sorted({i for i, _ in caption_pairs(test, lang)})
    if not keep or heads.captioner is None:
        return {}, []
    refs = [[c["text"] for c in test.captions[i] if c["lang"] == lang] for i in keep]
    hyps_all = generate_captions(heads, test, tokenizer, device, max_len, beam_size=beam_size,
                                 length_penalty=length_penalty)
    hyps = [hyps_all[i] for i in keep]
    common = Counter(c["text"] for caps in train.captions for c in caps if c["lang"] == lang).most_common(1)
    baseline = common[0][0] if common else ""
    metrics = {f"caption_{k}": v for k, v in caption_scores(hyps, refs, lang).items()}
    constant = caption_scores([baseline] * len(refs), refs, lang)
    metrics.update({f"caption_{k}_baseline": v for k, v in constant.items()})
    examples = [{"sample_id": test.sample_ids[i], "caption": h, "references": r}
                for i, h, r in zip(keep[:10], hyps[:10], refs[:10], strict=False)]
    return metrics, examples


def caption_scores(hyps: list[str], refs: list[list[str]], lang: str) -> dict[str, float]:
    """bleu1..4 (0-100), cider_d, rouge_l and distinct2 of captions against their references."""
    scores = {f"bleu{n}": b for n, b in enumerate(caption_bleu(hyps, refs, lang, 4), 1)}
    scores.update(cider_d=cider_d(hyps, refs, lang), rouge_l=rouge_l(hyps, refs, lang),
                  distinct2=distinct_n(hyps, 2, lang))
    return scores
