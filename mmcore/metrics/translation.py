"""Translation metrics: sacrebleu's BLEU and chrF with its standard settings, scored case-insensitively.

The project's tokenizer lower-cases what it decodes, so a translation can never match a capital letter of its
reference: both metrics lower-case hypotheses and references (sacrebleu's `lowercase=True`: the CLI's `-lc` for BLEU,
`--chrf-lowercase` for chrF).
"""

from __future__ import annotations

from mmcore.metrics.captions import check_pairs

# sacrebleu is imported where it scores: the registered model imports this package (through training code it
# shares) but never scores, so its environment does not need sacrebleu.


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu takes reference streams; a hypothesis with fewer references gets None in the rest."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(width)]


def sacrebleu_tokenize(lang: str) -> str:
    """sacrebleu's default tokenizer for a target language: "zh" for Chinese, "13a" otherwise."""
    return "zh" if lang.startswith("zh") else "13a"


def bleu(hyps: list[str], refs: list[list[str]], lang: str = "en") -> float:
    """Corpus BLEU (0-100) as `sacrebleu -l xx-<lang> -lc`: 4-gram, tokenizer "13a" ("zh" for Chinese: one
    token per character), exponential smoothing, no effective order, case-insensitive."""
    import sacrebleu

    check_pairs(hyps, refs)
    scorer = sacrebleu.BLEU(lowercase=True, tokenize=sacrebleu_tokenize(lang))
    return float(scorer.corpus_score(hyps, _streams(refs)).score)


def chrf(hyps: list[str], refs: list[list[str]]) -> float:
    """Corpus chrF (0-100) as `sacrebleu -m chrf --chrf-lowercase`: character 6-grams, beta 2, case-insensitive;
    meaningful for Chinese as it is."""
    import sacrebleu

    check_pairs(hyps, refs)
    return float(sacrebleu.CHRF(lowercase=True).corpus_score(hyps, _streams(refs)).score)
