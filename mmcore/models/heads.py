"""Task heads trained on frozen image features: a VQA answer classifier (and its blind baselines) and a
caption decoder. `mmcore.models.builders` assembles them from their parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.models import decoding

DecoderState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # GRU state (B, H), image (B, H), cells (B, N, H)


class GridProjector(nn.Module):
    """Maps frozen grid + pooled features to a set of cell vectors with learned position codes."""

    def __init__(self, grid_dim: int, pooled_dim: int, cells: int, hidden: int):
        super().__init__()
        self.cell = nn.Sequential(nn.LayerNorm(grid_dim), nn.Linear(grid_dim, hidden))
        self.whole = nn.Sequential(nn.LayerNorm(pooled_dim), nn.Linear(pooled_dim, hidden))
        self.position = nn.Parameter(torch.zeros(cells + 1, hidden))  # +1: the pooled "whole image" cell

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        cells = self.cell(grid.flatten(2).transpose(1, 2))  # (B, N, G) -> (B, N, H)
        return torch.cat([cells, self.whole(pooled).unsqueeze(1)], dim=1) + self.position  # (B, N+1, H)


def _take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along dim 0, as a one-hot matrix product: its backward is a matmul, which sums the
    gradients of repeated rows in a fixed order. Indexing's backward (index_put with accumulate) adds
    them in thread order on CPU, so training would not repeat bit for bit."""
    onehot = F.one_hot(index, x.shape[0]).to(x.dtype)  # (Q, B)
    return (onehot @ x.flatten(1)).view(len(index), *x.shape[1:])


class VQAHead(nn.Module):
    """Encodes the question, attends over the image cells with it, classifies the answer.

    Args:
        question_encoder: token ids (Q, T) -> question vectors (Q, hidden).
        image_projector: grid (B, G, g, g) and pooled (B, C) features -> cell vectors (B, N, hidden).
        n_answers: number of answer classes.
        hidden: width of the question and cell vectors.
        glimpses: attention maps over the cells per question.
        film: condition every cell on the question before attending (feature-wise linear modulation, FiLM):
            cell + MLP(cell * (1 + gamma(q)) + beta(q)). Attention alone can only weigh cells made without the
            question; FiLM lets a cell answer "is this the circle?", which binds an attribute to its object.
    """

    def __init__(self, question_encoder: nn.Module, image_projector: nn.Module, n_answers: int, hidden: int,
                 glimpses: int = 2, film: bool = False):
        super().__init__()
        out_dim = getattr(question_encoder, "out_dim", hidden)
        if out_dim != hidden:
            raise ValueError(f"the question encoder gives vectors of {out_dim}, the head expects hidden={hidden}")
        self.question = question_encoder
        self.image = image_projector
        self.attn = nn.Linear(hidden, hidden * glimpses)
        self.glimpses = glimpses
        self.film = nn.Linear(hidden, hidden * 2) if film else None  # question -> (gamma, beta) per channel
        self.film_mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden)) if film else None
        self.classifier = nn.Sequential(
            nn.Linear(hidden * (1 + 2 * glimpses), hidden * 2), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden * 2, n_answers),
        )

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, question_ids: torch.Tensor,
                owner: torch.Tensor | None = None) -> torch.Tensor:
        """Answer logits (Q, A) for questions (Q, T) about images grid (B, G, g, g), pooled (B, C).

        Without `owner`, question i is about image i (B = Q); with it, about image owner[i], so an image
        asked several questions is projected once.
        """
        # Questions repeat a lot (templates, the same question asked of many images): encode each distinct
        # one once. Exact: rows are independent, and the gradient sums over the copies.
        unique, inverse = torch.unique(question_ids, dim=0, return_inverse=True)
        q = _take_rows(self.question(unique), inverse)  # (Q, H)
        cells = self.image(grid, pooled)  # (B, N, H)
        if owner is not None:
            cells = _take_rows(cells, owner)  # (Q, N, H)
        if self.film is not None:
            gamma, beta = self.film(q).unsqueeze(1).chunk(2, dim=-1)  # (Q, 1, H) each
            cells = cells + self.film_mlp(cells * (1 + gamma) + beta)
        keys = self.attn(q).view(q.shape[0], self.glimpses, -1)  # (Q, G, H)
        weights = torch.softmax(keys @ cells.transpose(1, 2) / cells.shape[-1] ** 0.5, dim=-1)  # (Q, G, N)
        ctx = weights @ cells  # (Q, G, H)
        fused = torch.cat([q, ctx.flatten(1), (ctx * q.unsqueeze(1)).flatten(1)], dim=-1)
        return self.classifier(fused)  # (Q, A)


BLIND_INPUTS = ("question", "image")  # what a blind baseline sees


def blank_questions(question_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Each right-padded question (Q, T) cut to its first and last token: [BOS] [EOS], (Q, 2)."""
    last = ((question_ids != pad_id).sum(dim=1) - 1).clamp(min=0)  # (Q,) index of the last real token
    return torch.cat([question_ids[:, :1], question_ids.gather(1, last.unsqueeze(1))], dim=1)


class BlindVQA(nn.Module):
    """A VQA baseline that sees only one input: the question alone, or the image alone.

    The input it must not see is blanked before the wrapped head runs (zero image features; an empty
    question, [BOS] [EOS]), so the head's accuracy can be read against what either input alone gives.
    """

    def __init__(self, head: VQAHead, sees: str, pad_id: int = 0):
        super().__init__()
        if sees not in BLIND_INPUTS:
            raise ValueError(f"unknown blind VQA input {sees!r}; choose one of {list(BLIND_INPUTS)}")
        self.head = head
        self.sees = sees
        self.pad_id = pad_id

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, question_ids: torch.Tensor,
                owner: torch.Tensor | None = None) -> torch.Tensor:
        """Answer logits (Q, A), as `VQAHead.forward`, from the one input this baseline sees."""
        if self.sees == "question":
            grid, pooled = torch.zeros_like(grid), torch.zeros_like(pooled)
        else:
            question_ids = blank_questions(question_ids, self.pad_id)
        return self.head(grid, pooled, question_ids, owner)


class CaptionDecoder(nn.Module):
    """GRU language model conditioned on the image, attending over the image cells at every word.

    The whole image sets the initial state and is fed at every step (what the scene holds); at each
    position the GRU state queries the cells (Luong-style attention on the outputs, so training stays
    one fused GRU call) to read the colour and shape of the object it is about to name.
    """

    def __init__(self, vocab_size: int, grid_dim: int, pooled_dim: int, cells: int, word_dim: int = 128,
                 hidden: int = 256, pad_id: int = 0):
        super().__init__()
        width = grid_dim * cells + pooled_dim
        self.image = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.Tanh())
        self.cells = GridProjector(grid_dim, pooled_dim, cells, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(word_dim + hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden * 3, vocab_size)

    def _image(self, grid: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.image(torch.cat([grid.flatten(1), pooled], dim=-1))  # (B, H)
        return img, self.cells(grid, pooled)  # (B, H), (B, N, H)

    def _step(self, ids: torch.Tensor, img: torch.Tensor, cells: torch.Tensor,
              h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.embed(ids), img.unsqueeze(1).expand(-1, ids.shape[1], -1)], dim=-1)
        out, h = self.rnn(x, h)  # (B, T, H)
        scores = self.query(out) @ cells.transpose(1, 2) / cells.shape[-1] ** 0.5  # (B, T, N)
        ctx = torch.softmax(scores, dim=-1) @ cells  # (B, T, H)
        logits = self.out(torch.cat([out, img.unsqueeze(1).expand_as(out), ctx], dim=-1))  # (B, T, V)
        return logits, h

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, ids_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for predicting ids_in shifted by one. ids_in (B, T) -> (B, T, V)."""
        img, cells = self._image(grid, pooled)
        logits, _ = self._step(ids_in, img, cells, img.unsqueeze(0).contiguous())
        return logits

    def init_state(self, grid: torch.Tensor, pooled: torch.Tensor) -> DecoderState:
        """Decoding state (h, img, cells): every tensor batch-first, so beam search can reorder dim 0."""
        img, cells = self._image(grid, pooled)
        return img, img, cells  # (B, H) GRU state starts at the image, (B, H), (B, N, H)

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One word: tokens (B,) -> next-word logits (B, V) and the new state."""
        h, img, cells = state
        logits, h = self._step(tokens.unsqueeze(1), img, cells, h.unsqueeze(0).contiguous())  # h: (1, B, H)
        return logits[:, -1], (h.squeeze(0), img, cells)

    @torch.no_grad()
    def generate(self, grid: torch.Tensor, pooled: torch.Tensor, bos_id: int, eos_id: int, max_len: int = 32, *,
                 beam_size: int = 1, length_penalty: float = 1.0, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Greedy decoding by default, beam search if beam_size > 1, sampling if do_sample.

        Returns (B, L) token ids, [EOS]-terminated rows padded with [EOS]. See `mmcore.models.decoding`.
        """
        state = self.init_state(grid, pooled)
        if do_sample:
            if beam_size > 1:
                raise ValueError("choose either beam search (beam_size > 1) or sampling (do_sample), not both")
            return decoding.sample(self.step, state, bos_id, eos_id, max_len, temperature, top_k, top_p, generator)
        if beam_size > 1:
            return decoding.beam_search(self.step, state, bos_id, eos_id, max_len, beam_size, length_penalty)[0]
        return decoding.greedy(self.step, state, bos_id, eos_id, max_len)
