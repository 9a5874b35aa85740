"""Decoding strategies: greedy, beam search and sampling, on the caption decoder and on toy bigram tables."""

from __future__ import annotations

import math

import pytest
import torch

from mmcore.models import decoding
from mmcore.models.heads import CaptionDecoder

BOS, EOS, A, B, C = 1, 2, 3, 4, 5  # toy vocabulary; 0 is padding
V = 6


def old_greedy(dec: CaptionDecoder, grid, pooled, bos_id, eos_id, max_len):
    """The greedy loop CaptionDecoder.generate ran before the decoding strategies were split out."""
    img, cells = dec._image(grid, pooled)
    h = img.unsqueeze(0).contiguous()
    tok = torch.full((img.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(img.shape[0], dtype=torch.bool)
    out = []
    for _ in range(max_len):
        logits, h = dec._step(tok, img, cells, h)
        tok = logits[:, -1].argmax(dim=-1, keepdim=True).masked_fill(done.unsqueeze(1), eos_id)
        out.append(tok)
        done |= tok.squeeze(1) == eos_id
        if bool(done.all()):
            break
    return torch.cat(out, dim=1)


def tiny_decoder(seed: int, eos_bias: float = 0.15):
    """A random decoder nudged towards EOS (id 3) so that rows end at different steps, or not at all."""
    torch.manual_seed(seed)
    dec = CaptionDecoder(40, 24, 16, 4, word_dim=8, hidden=16).eval()
    with torch.no_grad():
        dec.out.bias[3] += eos_bias
    return dec, torch.randn(6, 24, 4), torch.randn(6, 16)


def bigram_step(*tables: dict[int, dict[int, float]]):
    """Step over per-item bigram tables {prev: {next: prob}}; the state is each row's table number (B,)."""
    logp = torch.full((len(tables), V, V), math.log(1e-6))
    for n, table in enumerate(tables):
        for prev, nexts in table.items():
            for word, p in nexts.items():
                logp[n, prev, word] = math.log(p)

    def step(tokens, kind):
        return logp[kind, tokens], kind  # (B, V)

    return step


# greedy is myopic here: A (0.5) then EOS (0.35) = 0.175, but B (0.4) then EOS (0.9) = 0.36
MYOPIC = {BOS: {A: 0.5, B: 0.4, C: 0.1}, A: {EOS: 0.35, B: 0.33, C: 0.32}, B: {EOS: 0.9, C: 0.1}}
LONG = {BOS: {C: 0.9, A: 0.1}, C: {A: 0.9, EOS: 0.1}, A: {EOS: 0.9, B: 0.1}}  # C A EOS
ENDLESS = {BOS: {A: 0.9, B: 0.1}, A: {A: 0.9, B: 0.1}, B: {A: 0.9, B: 0.1}}  # A A A ... (EOS ~never)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_matches_the_old_decoder_loop(seed):
    dec, grid, pooled = tiny_decoder(seed)
    want = old_greedy(dec, grid, pooled, 2, 3, 12)
    assert torch.equal(dec.generate(grid, pooled, 2, 3, 12), want)
    assert torch.equal(decoding.greedy(dec.step, dec.init_state(grid, pooled), 2, 3, 12), want)
    if seed == 0:  # this seed mixes rows that stop early with rows that run to max_len
        assert (want == 3).any(dim=1).sum() in range(1, 6)


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_one_is_greedy(seed):
    dec, grid, pooled = tiny_decoder(seed)
    ids, _ = decoding.beam_search(dec.step, dec.init_state(grid, pooled), 2, 3, 12, beam_size=1)
    assert torch.equal(ids, dec.generate(grid, pooled, 2, 3, 12))


def test_beam_search_beats_myopic_greedy():
    step, kind = bigram_step(MYOPIC), torch.zeros(1, dtype=torch.long)
    assert decoding.greedy(step, kind, BOS, EOS, 5).tolist() == [[A, EOS]]
    ids, score = decoding.beam_search(step, kind, BOS, EOS, 5, beam_size=2)
    assert ids.tolist() == [[B, EOS]]
    assert score.item() == pytest.approx(math.log(0.36), abs=1e-4) and score.item() > math.log(0.175)


def test_beam_search_batches_items_that_finish_at_different_times():
    step = bigram_step(MYOPIC, LONG, ENDLESS)
    ids, score = decoding.beam_search(step, torch.tensor([0, 1, 2]), BOS, EOS, max_len=4, beam_size=2)
    assert ids.tolist() == [[B, EOS, EOS, EOS], [C, A, EOS, EOS], [A, A, A, A]]  # the last one hit max_len
    alone = decoding.beam_search(step, torch.tensor([1]), BOS, EOS, max_len=4, beam_size=2)[0]
    assert alone.tolist() == [[C, A, EOS]]  # the same caption as in the batch, without batch padding
    assert score.tolist() == pytest.approx([math.log(0.36), math.log(0.9**3), math.log(0.9**4)], abs=1e-4)
    assert decoding.beam_search(step, torch.tensor([1]), BOS, EOS, max_len=2, beam_size=3)[0].shape == (1, 2)


def test_length_penalty_favours_longer_finished_hypotheses():
    # EOS now (0.48) against A then EOS (0.47 * 0.999): raw log-prob prefers stopping, GNMT's norm does not
    step, kind = bigram_step({BOS: {EOS: 0.48, A: 0.47, B: 0.05}, A: {EOS: 0.999, B: 0.001}}), torch.zeros(1).long()
    assert decoding.beam_search(step, kind, BOS, EOS, 5, beam_size=2, length_penalty=0.0)[0].tolist() == [[EOS]]
    assert decoding.beam_search(step, kind, BOS, EOS, 5, beam_size=2, length_penalty=1.0)[0].tolist() == [[A, EOS]]


def rescore(dec: CaptionDecoder, grid, pooled, ids: list[int]) -> float:
    """Total log-probability of ids for one image, fed word by word from a fresh state."""
    state, prev, total = dec.init_state(grid, pooled), torch.tensor([2]), 0.0
    for word in ids:
        logits, state = dec.step(prev, state)
        total += torch.log_softmax(logits, dim=-1)[0, word].item()
        prev = torch.tensor([word])
    return total


def test_beam_scores_are_the_log_probability_of_the_returned_captions():
    # a beam whose state was reordered wrongly would report a score its caption does not have
    dec, grid, pooled = tiny_decoder(1, eos_bias=0.3)
    ids, scores = decoding.beam_search(dec.step, dec.init_state(grid, pooled), 2, 3, 8, beam_size=4)
    assert ids.shape[0] == 6 and ids.shape[1] <= 8
    for i, row in enumerate(ids.tolist()):
        caption = row[: row.index(3) + 1] if 3 in row else row
        assert 3 in row or len(row) == 8  # each caption ends with EOS or fills max_len
        assert rescore(dec, grid[i : i + 1], pooled[i : i + 1], caption) == pytest.approx(scores[i].item(), abs=1e-4)
    assert torch.equal(dec.generate(grid, pooled, 2, 3, 8, beam_size=4), ids)


def test_beam_search_reorders_a_layers_first_state_with_a_custom_reorder():
    dec, grid, pooled = tiny_decoder(2)

    def step(tokens, state):  # the GRU state kept as (1, B, H), as nn.GRU wants it
        logits, (h, img, cells) = dec.step(tokens, (state[0].squeeze(0), *state[1:]))
        return logits, (h.unsqueeze(0), img, cells)

    def reorder(state, index):
        return state[0].index_select(1, index), state[1].index_select(0, index), state[2].index_select(0, index)

    h, img, cells = dec.init_state(grid, pooled)
    got = decoding.beam_search(step, (h.unsqueeze(0), img, cells), 2, 3, 8, 3, reorder=reorder, batch_size=6)
    want = decoding.beam_search(dec.step, (h, img, cells), 2, 3, 8, 3)
    assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1])


def test_reorder_state_walks_nested_containers():
    state = {"h": torch.arange(3), "pair": (torch.arange(3) * 10, [torch.arange(6).view(3, 2)]), "none": None}
    out = decoding.reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["h"].tolist() == [2, 2, 0] and out["pair"][0].tolist() == [20, 20, 0]
    assert out["pair"][1][0].tolist() == [[4, 5], [4, 5], [0, 1]] and out["none"] is None


def test_cold_or_top1_sampling_is_greedy():
    dec, grid, pooled = tiny_decoder(3)
    want = dec.generate(grid, pooled, 2, 3, 12)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(dec.generate(grid, pooled, 2, 3, 12, do_sample=True, temperature=1e-6, generator=gen), want)
    assert torch.equal(dec.generate(grid, pooled, 2, 3, 12, do_sample=True, temperature=0.0), want)
    assert torch.equal(dec.generate(grid, pooled, 2, 3, 12, do_sample=True, top_k=1, generator=gen), want)
    assert not torch.equal(dec.generate(grid, pooled, 2, 3, 12, do_sample=True, generator=gen), want)


def test_top_p_samples_only_from_the_nucleus():
    step = bigram_step({BOS: {A: 0.5, B: 0.3, C: 0.15, EOS: 0.05}})
    kind, gen = torch.zeros(4000, dtype=torch.long), torch.Generator().manual_seed(0)
    free = decoding.sample(step, kind, BOS, EOS, 1, generator=gen)[:, 0]
    assert set(free.tolist()) == {A, B, C, EOS}  # without the filter every token shows up
    nucleus = decoding.sample(step, kind, BOS, EOS, 1, top_p=0.7, generator=gen)[:, 0]
    assert set(nucleus.tolist()) == {A, B}  # A + B = 0.8 is the smallest set reaching 0.7
    assert (nucleus == A).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.04)  # renormalised
    top2 = decoding.sample(step, kind, BOS, EOS, 1, top_k=2, generator=gen)[:, 0]
    assert set(top2.tolist()) == {A, B}


def test_filter_logits_keeps_the_top_token_even_for_a_tiny_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isfinite(decoding.filter_logits(logits, top_p=1e-3)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(decoding.filter_logits(logits, top_k=2)).tolist() == [[False, True, True, False]]


def test_same_seed_same_samples():
    dec, grid, pooled = tiny_decoder(0)

    def draw(seed):
        return dec.generate(grid, pooled, 2, 3, 12, do_sample=True, top_p=0.9,
                            generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_conflicting_options_are_rejected():
    dec, grid, pooled = tiny_decoder(0)
    with pytest.raises(ValueError, match="not both"):
        dec.generate(grid, pooled, 2, 3, 12, beam_size=2, do_sample=True)
    with pytest.raises(ValueError, match="top_p"):
        dec.generate(grid, pooled, 2, 3, 12, do_sample=True, top_p=0.0)
