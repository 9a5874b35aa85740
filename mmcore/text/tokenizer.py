"""Subword tokenizer for English and Chinese, trained with HF `tokenizers` on the training texts.

Chinese has no spaces, so the normalizer puts spaces around every CJK character (as BERT does) and
each character becomes a token; English is split into WordPiece subwords. Characters never seen in
training map to [UNK] rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from mmcore.io import write_atomic

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = [PAD, UNK, BOS, EOS]  # PAD is id 0: padded batches are zero-filled

# A space between two CJK characters (or CJK punctuation) comes from tokenization, not from the text.
_CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
# Also undone: the space the decoder puts before punctuation ("shapes :" -> "shapes:").
_CJK_SPACE = re.compile(rf"(?<={_CJK}) (?={_CJK})| (?=[,.!?:;])|(?<=[,.!?:;]) (?={_CJK})")


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
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=64))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=1)
        tok.train_from_iterator(texts, trainer=trainer)
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
        """Text of ids up to the first [EOS], specials dropped, CJK spacing undone."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                kept.append(i)
        return _CJK_SPACE.sub("", self._tok.decode(kept, skip_special_tokens=False))
