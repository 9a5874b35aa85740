"""Tokenizer for English and Chinese: a HF `tokenizers` WordPiece model with a deterministic vocabulary.

Chinese has no spaces, so the normalizer puts spaces around every CJK character (as BERT does) and
each character becomes a token. The vocabulary holds every character seen in training (as a word
start and as a `##` continuation), then the most frequent whole words: frequent words are one token,
rare ones are spelled out, and characters never seen map to [UNK] rather than failing.

HF's WordPiece trainer breaks ties between equally good merges differently from run to run; choosing
the vocabulary here (frequency, then alphabetical order) makes a retrained tokenizer, and so every
token shard after it, byte-for-byte reproducible.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from mmcore.io import write_atomic

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = [PAD, UNK, BOS, EOS]  # PAD is id 0: padded batches are zero-filled

# A space between two CJK characters (or CJK punctuation) comes from tokenization, not from the text.
_CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
# Also undone: the space the decoder puts before punctuation ("shapes :" -> "shapes:"), and the spaces around a
# hyphen or an apostrophe inside a word ("t - shirt" -> "t-shirt", "one ' s" -> "one's"): the pre-tokenizer
# splits them off, and the PTB tokenizer of the caption metrics keeps "t-shirt" whole and reads "one's" as
# "one" "'s" (a spaced dash between words is far rarer in captions).
_CJK_SPACE = re.compile(rf"(?<={_CJK}) (?={_CJK})| (?=[,.!?:;])|(?<=[,.!?:;]) (?={_CJK})"
                        r"|(?<=\w) (?=['-] \w)|(?<=\w ['-]) (?=\w)")


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` with the ids and padding rules the models use."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        missing = [s for s in SPECIALS if tokenizer.token_to_id(s) is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(s) for s in SPECIALS)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4000) -> TextTokenizer:
        normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
        )
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        words: Counter[str] = Counter()
        for text in texts:
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        chars: Counter[str] = Counter()
        for word, n in words.items():
            for ch in word:
                chars[ch] += n
        by_count = lambda counts: sorted(counts, key=lambda t: (-counts[t], t))  # noqa: E731
        kept_chars = by_count(chars)[: max(0, (vocab_size - len(SPECIALS)) // 2)]
        base = SPECIALS + kept_chars + [f"##{c}" for c in kept_chars]
        whole = [w for w in by_count(words) if len(w) > 1][: max(0, vocab_size - len(base))]
        vocab = {t: i for i, t in enumerate(base + whole)}
        tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=64))
        tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def from_str(cls, data: str) -> TextTokenizer:
        return cls(Tokenizer.from_str(data))

    def save(self, path: str | Path) -> Path:
        return write_atomic(path, lambda tmp: self._tok.save(str(tmp)))

    def to_str(self) -> str:
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, texts: list[str], max_len: int) -> list[list[int]]:
        """Token ids as [BOS] ... [EOS], cut so the whole sequence fits in max_len."""
        out = []
        for enc in self._tok.encode_batch(texts, add_special_tokens=False):
            out.append([self.bos_id, *enc.ids[: max_len - 2], self.eos_id])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids up to the first [EOS], specials dropped, CJK spacing and hyphens undone."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                kept.append(i)
        return _CJK_SPACE.sub("", self._tok.decode(kept, skip_special_tokens=False))
