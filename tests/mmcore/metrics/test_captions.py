"""Caption metrics equal coco-caption's (pycocoevalcap 1.2, run for real: its Java PTB tokenizer, Bleu, Cider
and Rouge) on a cased, punctuated fixture, and our tokens equal its tokens."""

from __future__ import annotations

import random
import shutil

import pytest
import sacrebleu

from mmcore.metrics import caption_bleu, caption_tokens, cider_d, distinct_n, ptb_tokens, rouge_l
from tests.mmcore.metrics.caption_fixture import HYPS, REFS

# lines whose PTB tokens we match beyond the fixture (each names a rule of mmcore.metrics.ptb)
PTB_CASES = [
    'A man\'s car doesn\'t start; it\'s "broken" (really).', "I can't believe we're here... They'll go!",
    "Cannot gonna wanna I'd've o'clock rock'n'roll dogs' bones", "won't ain't shan't let's 'tis gimme lemme gotta",
    "Two dogs -- one big, one small -- play at 3:30 p.m. near St. Mark's.", "U.S. army, e.g. dogs, Mr. Smith etc.",
    "A colour photo, 3.5 km away, $20 or 1,000 dogs and 50% of #1.", "Brackets [like this] and {braces} a/b c*d",
    "Hello!!! What?! Yes?? no... ok.. well ok.... wait. . . a,,b a--b ---- x:y a;b hi!how", "a. b. i. the letter a.",
    "\u201cCurly quotes\u201d and \u2018single\u2019 \u2014 em dash \u2026 don\u2019t", "the 'dog' and ''dog''",
    "5-year-old e-mail -hello hello- co-op. !hi ,hi .hi", "a cat sat. in the sun. they wed. the dog is no.",
    "jan. feb. sept. mon. tues. fri. sat. sun. ave. rd. blvd. hwy. mtn. no. vol. fig. approx.",
    "&amp; &lt; 'em 'cause 'til 'round 'twas hey' the u.s.a.. wow", "she'd've DON'T I'M 90's '90s 2 dogs & 3 cats",
]



def _fuzz(lines: int = 300, seed: int = 0) -> list[str]:
    """Seeded lines of the words and marks the rules cover, glued in every order (hashtags aside)."""
    rng = random.Random(seed)
    words = ("a man dog's it's doesn't can't won't they're we've I'll she'd I'm isn't t-shirt red-and-white The "
             "Mr. St. U.S. e.g. etc. 3.5 1,000 3:30 $20 50% #1 (small) [big] {x} \"quoted\" 'single' dogs' o'clock "
             "Caf\u00e9 rock'n'roll 90's '90s cannot gonna").split()
    marks = ["", "", "", ",", ".", "!", "?", ";", ":", "...", "!!", "?!", "--", "-", ")", "'", '"']
    lead = ["", "", "", "(", '"', "'", "-", "--", "$", "..."]
    return [" ".join(rng.choice(lead) + rng.choice(words) + rng.choice(marks) for _ in range(rng.randint(3, 12)))
            for _ in range(lines)]


FUZZ = _fuzz()


@pytest.fixture(scope="module")
def coco() -> dict:
    """pycocoevalcap's tokens of the fixture and of PTB_CASES, and its scores of the fixture."""
    if shutil.which("java") is None:
        pytest.skip("coco-caption's PTB tokenizer needs java")
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {("ref", i): [{"caption": r} for r in refs] for i, refs in enumerate(REFS)}
    captions.update({("hyp", i): [{"caption": h}] for i, h in enumerate(HYPS)})
    captions.update({("case", i): [{"caption": c}] for i, c in enumerate(PTB_CASES + FUZZ)})
    tokens = PTBTokenizer().tokenize(captions)  # one java run
    gts = {i: tokens["ref", i] for i in range(len(REFS))}
    res = {i: tokens["hyp", i] for i in range(len(HYPS))}
    return {"tokens": tokens, "bleu": Bleu(4).compute_score(gts, res, verbose=0)[0],
            "cider": Cider().compute_score(gts, res)[0], "rouge": Rouge().compute_score(gts, res)[0]}


def test_our_tokens_are_coco_captions(coco):
    tokens = coco["tokens"]
    for i, refs in enumerate(REFS):
        assert [" ".join(ptb_tokens(r)) for r in refs] == tokens["ref", i]
    for i, h in enumerate(HYPS):
        assert [" ".join(ptb_tokens(h))] == tokens["hyp", i]
    for i, c in enumerate(PTB_CASES + FUZZ):
        assert " ".join(ptb_tokens(c)) == tokens["case", i][0], c


def test_bleu_cider_d_and_rouge_l_equal_coco_captions(coco):
    ours = caption_bleu(HYPS, REFS)
    assert [b / 100 for b in ours] == pytest.approx(coco["bleu"], rel=1e-9, abs=1e-12)
    assert cider_d(HYPS, REFS) == pytest.approx(coco["cider"], rel=1e-9)
    assert rouge_l(HYPS, REFS) == pytest.approx(coco["rouge"], rel=1e-9)
    assert caption_bleu(HYPS, REFS, order=2) == ours[:2]  # BLEU-2 is BLEU-2 whatever the highest order


def test_chinese_is_scored_by_coco_captions_scorers_on_characters():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps = ["左上角有一个大红色圆形", "图中有两个形状：中间有一个小蓝色正方形", "右边有一个绿色三角形。"]
    refs = [["左上角有一个大红色圆形", "图中有一个形状：左上角有一个大红色圆形"],
            ["中间有一个小蓝色正方形，右边有一个黄色菱形", "图中有两个形状：中间有一个小蓝色正方形，右边有黄色菱形"],
            ["左边有一个绿色三角形"]]
    assert caption_tokens("红色圆形。", "zh") == ["红", "色", "圆", "形"]
    gts = {i: [" ".join(caption_tokens(r, "zh")) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(caption_tokens(h, "zh"))] for i, h in enumerate(hyps)}
    assert [b / 100 for b in caption_bleu(hyps, refs, "zh")] == pytest.approx(
        Bleu(4).compute_score(gts, res, verbose=0)[0], rel=1e-9)
    assert cider_d(hyps, refs, "zh") == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-9)
    assert rouge_l(hyps, refs, "zh") == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-9)


def test_bleu_on_lowercase_unpunctuated_captions_is_the_sacrebleu_value_it_replaced():
    """Where every order has a match, coco-caption's BLEU differs from sacrebleu's only by its 1e-9 smoothing."""
    hyps = ["a large red circle at the top left", "two shapes a small blue square on the right",
            "a green triangle in the center", "a yellow diamond at the bottom"]
    refs = [["a large red circle at the top left", "one shape a large red circle at the top left"],
            ["a small blue square on the right and a red circle", "two shapes a red circle and a small blue square"],
            ["a small green triangle in the center"], ["a purple diamond at the bottom right", "a yellow diamond"]]
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(2)]
    for n, ours in enumerate(caption_bleu(hyps, refs), 1):
        old = sacrebleu.BLEU(max_ngram_order=n, effective_order=n < 4).corpus_score(hyps, streams).score
        assert ours == pytest.approx(old, abs=1e-6)


def test_bleu_identical_is_100_and_handles_uneven_references():
    assert caption_bleu(["a large red circle at the top left"], [["A large red circle, at the top left."]]) == \
        pytest.approx([100] * 4)
    uneven = caption_bleu(["a red circle", "two blue squares on the left"],
                          [["a red circle", "one red circle"], ["two blue squares on the left"]])
    assert uneven == pytest.approx([100] * 4)
    assert caption_bleu(["红色圆形在左侧"], [["红色圆形在左侧"]], lang="zh") == pytest.approx([100] * 4)
    assert caption_bleu(["blue"], [["a large red circle at the top left"]])[0] < 5
    scores = caption_bleu(["a red circle on the left"], [["a red circle at the left"]])
    assert scores[0] == pytest.approx(100 * 5 / 6) and scores == sorted(scores, reverse=True)


# Captions scored by coco-caption's reference implementation (pycocoevalcap 1.2, cider_scorer.CiderScorer
# with n=4, sigma=6, and rouge.Rouge) on the same tokens: CIDEr-D 3.882700317886271, ROUGE-L
# 0.7096219931271478.
SHAPE_HYPS = ["a large red circle at the top left", "two blue squares", "a small green triangle in the middle",
              "a yellow circle"]
SHAPE_REFS = [["a large red circle at the top left", "a big red circle in the top left corner"],
              ["two blue squares on the right", "a pair of blue squares"],
              ["a green triangle in the centre", "a small green triangle in the middle",
               "green triangle, small, middle"],
              ["a purple square at the bottom"]]


def test_cider_d_and_rouge_l_on_known_values():
    assert cider_d(SHAPE_HYPS, SHAPE_REFS) == pytest.approx(3.882700317886271, rel=1e-12)
    assert rouge_l(SHAPE_HYPS, SHAPE_REFS) == pytest.approx(0.7096219931271478, rel=1e-12)
    constant = ["a large red circle at the top left"] * 4
    assert cider_d(constant, SHAPE_REFS) < cider_d(SHAPE_HYPS, SHAPE_REFS)
    assert rouge_l(constant, SHAPE_REFS) < rouge_l(SHAPE_HYPS, SHAPE_REFS)
    assert rouge_l([""], [["", "a dog"]]) == 1.0  # as coco-caption: an empty caption is one empty token


def test_tokens_distinct_n_and_bad_input():
    assert caption_tokens("A red, round circle!") == ["a", "red", "round", "circle"]
    assert caption_tokens("The car's T-shirt doesn't fit.") == ["the", "car", "'s", "t-shirt", "does", "n't", "fit"]
    assert distinct_n(["a b a b", "a c"], 1) == 0.5 and distinct_n(["a b a b", "a c"], 2) == 0.75
    with pytest.raises(ValueError, match="reference list"):
        cider_d(["a"], [[]])
    with pytest.raises(ValueError, match="reference list"):
        caption_bleu(["a", "b"], [["a"]])
