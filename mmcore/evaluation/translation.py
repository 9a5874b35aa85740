"""Translation quality of the translator: BLEU and chrF per direction, beside a constant-caption baseline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from mmcore.features import FeatureSet
from mmcore.metrics import bleu, chrf
from mmcore.models.text_heads import Translator
from mmcore.text.tokenizer import TextTokenizer
from mmcore.training.loop import pad_batch
from mmcore.training.text_heads import parallel_index


@torch.no_grad()
def translate(model: Translator, src_ids: list[list[int]], tgt_lang_idx: int, tokenizer: TextTokenizer,
              device: torch.device, max_len: int = 48, beam_size: int = 1, batch_size: int = 256) -> list[str]:
    """Texts of the translations of token id lists into language number `tgt_lang_idx`."""
    model.eval()
    out: list[str] = []
    for s in range(0, len(src_ids), batch_size):
        src = pad_batch(src_ids[s : s + batch_size]).to(device)
        lang = torch.full((len(src),), tgt_lang_idx, dtype=torch.long, device=device)
        ids = model.generate(src, lang, tokenizer.bos_id, tokenizer.eos_id, max_len, beam_size=beam_size)
        out.extend(tokenizer.decode(row) for row in ids.cpu().tolist())
    return out


def evaluate_translation(model: Translator, train: FeatureSet, test: FeatureSet, tokenizer: TextTokenizer,
                         device: torch.device, langs: Sequence[str] = ("en", "zh"), max_len: int = 48,
                         beam_size: int = 1, n_examples: int = 5) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """BLEU and chrF per direction (`translation_bleu_en_zh`, ...), one reference per source caption: its
    parallel caption. Baseline (`..._baseline`): the most frequent training caption of the target language.

    Both are sacrebleu's, case-insensitive (the tokenizer lower-cases what it decodes), see `mmcore.metrics`.
    """
    metrics: dict[str, float] = {}
    examples: list[dict[str, Any]] = []
    for k, tgt in enumerate(langs):
        common = Counter(c["text"] for caps in train.captions for c in caps if c["lang"] == tgt).most_common(1)
        for src in langs:
            index = parallel_index(test, src, tgt) if src != tgt else []
            if not index:
                continue
            hyps = translate(model, [test.caption_ids[i][a] for i, a, _ in index], k, tokenizer, device, max_len,
                             beam_size)
            refs = [[test.captions[i][b]["text"]] for i, _, b in index]
            name = f"{src}_{tgt}"
            metrics[f"translation_bleu_{name}"] = bleu(hyps, refs, tgt)
            metrics[f"translation_chrf_{name}"] = chrf(hyps, refs)
            constant = [common[0][0] if common else ""] * len(refs)
            metrics[f"translation_bleu_{name}_baseline"] = bleu(constant, refs, tgt)
            metrics[f"translation_chrf_{name}_baseline"] = chrf(constant, refs)
            examples += [{"direction": name, "source": test.captions[i][a]["text"], "translation": h,
                          "reference": r[0]} for (i, a, _), h, r in zip(index, hyps, refs, strict=True)][:n_examples]
    return metrics, examples
