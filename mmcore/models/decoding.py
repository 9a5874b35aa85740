"""Decoding strategies for autoregressive decoders: greedy, beam search and (top-k / nucleus) sampling.

A decoder plugs in through a step function and an initial state:

    step(tokens (B,), state) -> (logits (B, V), new_state)

The state is whatever the decoder carries between words: a tensor, or a tuple / list / dict of them
(nested freely; non-tensor leaves such as None pass through untouched). Beam search has to expand the
state to B*K rows and reorder it after every step; by default it does so with `reorder_state`, which
index-selects dim 0 of every tensor. Convention: keep every state tensor batch-first (e.g. a GRU hidden
state as (B, H), unsqueezed to (1, B, H) inside `step`), or pass a `reorder(state, index)` function that
knows where the batch dim lies (e.g. `lambda h, i: h.index_select(1, i)` for a raw (layers, B, H) state;
then also pass `batch_size`, as the batch size is otherwise read off dim 0 of the first tensor).

Every strategy returns (B, L) token ids in which a row that produced [EOS] is padded with [EOS] after it,
and L is the longest row (at most max_len); a row that never produced [EOS] holds max_len tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

State = Any  # a tensor, or a (nested) tuple / list / dict of tensors
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
ReorderFn = Callable[[State, torch.Tensor], State]


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Selects rows `index` (dim 0) of every tensor in a (nested) state; other leaves pass through."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(v, index) for v in state)
    return state


def _first_tensor(state: State) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for v in values:
        try:
            return _first_tensor(v)
        except ValueError:
            continue
    raise ValueError("the decoder state holds no tensor; pass batch_size and device explicitly")


def _batch_and_device(state: State, batch_size: int | None) -> tuple[int, torch.device]:
    first = _first_tensor(state)
    return (first.shape[0] if batch_size is None else batch_size), first.device


def _decode(step: StepFn, state: State, bos_id: int, eos_id: int, max_len: int, batch_size: int | None,
            choose: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """One token per row per step, picked by choose(logits (B, V)) -> (B,), until every row hit [EOS]."""
    b, device = _batch_and_device(state, batch_size)
    tok = torch.full((b,), bos_id, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    out = []
    for _ in range(max_len):
        logits, state = step(tok, state)  # (B, V)
        tok = choose(logits).masked_fill(done, eos_id)  # finished rows keep emitting [EOS] as padding
        out.append(tok)
        done |= tok == eos_id
        if bool(done.all()):
            break
    return torch.stack(out, dim=1) if out else torch.empty(b, 0, dtype=torch.long, device=device)


@torch.no_grad()
def greedy(step: StepFn, init_state: State, bos_id: int, eos_id: int, max_len: int,
           batch_size: int | None = None) -> torch.Tensor:
    """Argmax token at every step. Returns (B, L) ids, [EOS]-padded after each row's [EOS]."""
    return _decode(step, init_state, bos_id, eos_id, max_len, batch_size, lambda logits: logits.argmax(dim=-1))


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Sets logits outside the top-k and outside the nucleus (top-p) to -inf. logits (B, V) -> (B, V).

    The nucleus is the smallest set of most probable tokens whose total probability reaches top_p; the
    most probable token is always kept. top_k=0 and top_p=1.0 switch the respective filter off.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (so rank 0 always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


@torch.no_grad()
def sample(step: StepFn, init_state: State, bos_id: int, eos_id: int, max_len: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
           batch_size: int | None = None) -> torch.Tensor:
    """Ancestral sampling from softmax(logits / temperature), restricted by top-k and nucleus filtering.

    temperature=0 means greedy (argmax). Pass a seeded torch.Generator (on the logits' device) to make
    the draws reproducible. Returns (B, L) ids, [EOS]-padded after each row's [EOS].
    """
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")

    def choose(logits: torch.Tensor) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode(step, init_state, bos_id, eos_id, max_len, batch_size, choose)


def length_norm(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016); alpha=0 ranks by raw log-prob."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def beam_search(step: StepFn, init_state: State, bos_id: int, eos_id: int, max_len: int, beam_size: int,
                length_penalty: float = 1.0, reorder: ReorderFn = reorder_state,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched beam search (B*K rows in one step call) keeping finished hypotheses aside.

    Each step ranks the 2K best extensions of the K live beams of an item: an [EOS] extension ranked
    within the top K becomes a finished hypothesis, the K best others stay live (2K candidates always hold
    K non-[EOS] ones, as each beam contributes at most one [EOS]). An item stops once it has K finished
    hypotheses; at max_len its live beams join the finished ones unterminated. The answer is the
    hypothesis with the best log-prob / `length_norm(length, length_penalty)` (GNMT, length counting the
    [EOS]). With beam_size=1 this is exactly greedy decoding.

    Returns:
        ((B, L) ids, [EOS]-padded after each row's [EOS]; (B,) total log-probability of each chosen row).
    """
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"need beam_size >= 1 and max_len >= 1, got {beam_size} and {max_len}")
    b, device = _batch_and_device(init_state, batch_size)
    k = beam_size
    rows = torch.arange(b, device=device).repeat_interleave(k)  # beam j of item i is row i*K + j
    state = reorder(init_state, rows)
    tok = torch.full((b * k,), bos_id, dtype=torch.long, device=device)
    seqs = torch.empty(b * k, 0, dtype=torch.long, device=device)  # (B*K, t) live hypotheses
    scores = torch.full((b, k), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start as the same [BOS]: expand only one of them at first
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(b)]  # (ranking, log-prob, ids)
    done = [False] * b
    for t in range(1, max_len + 1):
        logits, state = step(tok, state)  # (B*K, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        v = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(b, k * v)  # (B, K*V)
        top, idx = cand.topk(min(2 * k, k * v), dim=-1)  # (B, 2K), best first
        beam, word = idx // v, idx % v
        is_eos = word == eos_id
        new = is_eos[:, :k] & torch.isfinite(top[:, :k])  # [EOS] ranked within the beam width
        for i, j in new.nonzero().tolist():
            if not done[i]:
                ids = seqs[i * k + beam[i, j]].tolist() + [eos_id]
                finished[i].append((top[i, j].item() / length_norm(t, length_penalty), top[i, j].item(), ids))
        live_scores, pick = top.masked_fill(is_eos, -math.inf).topk(k, dim=-1)  # (B, K)
        src = (torch.arange(b, device=device).unsqueeze(1) * k + beam.gather(1, pick)).view(-1)  # (B*K,)
        tok = word.gather(1, pick).view(-1)
        seqs = torch.cat([seqs.index_select(0, src), tok.unsqueeze(1)], dim=1)
        scores = live_scores
        for i in range(b):
            if not done[i] and t == max_len:  # out of room: the live beams compete unterminated
                for j in range(k):
                    s = live_scores[i, j].item()
                    if math.isfinite(s):
                        finished[i].append((s / length_norm(t, length_penalty), s, seqs[i * k + j].tolist()))
            done[i] = done[i] or len(finished[i]) >= k or t == max_len
        if all(done):
            break
        state = reorder(state, src)
    return _best_rows(finished, eos_id, device)


def _best_rows(finished: list[list[tuple[float, float, list[int]]]], eos_id: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's best-ranked hypothesis as one [EOS]-padded (B, L) matrix, with its log-probability."""
    best = [max(hyps, key=lambda h: h[0]) if hyps else (-math.inf, -math.inf, [eos_id]) for hyps in finished]
    width = max(len(h[2]) for h in best)
    out = torch.full((len(best), width), eos_id, dtype=torch.long, device=device)
    for i, (_, _, ids) in enumerate(best):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
    return out, torch.tensor([h[1] for h in best], device=device)
