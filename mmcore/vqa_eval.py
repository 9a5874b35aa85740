"""The official VQA accuracy: answer normalisation and the human-agreement score, as the VQA evaluation code
computes them (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit a013f00; a Python 3
port lives in tests/reference/, and the tests hold this module to it).

Per question, with the human answers g_1..g_n (VQA v2: n = 10) and a predicted answer p:

    acc(p) = mean over i = 1..n of min(1, #{j != i : g_j == p} / 3)

i.e. the mean over the n leave-one-out subsets of the humans; for ten answers that is min(1, 0.3 * #humans
who gave p). Answers are compared after newlines and tabs become spaces and the ends are stripped; only when
the humans disagree (more than one distinct answer) are both sides also normalised as the official code does
(punctuation, number words to digits, articles dropped, contractions restored). The official code reports
percentages rounded to 2 decimals; this module reports fractions 0-1, unrounded.

A question with fewer than two answers (easy-VQA and the synthetic shapes give one) counts its one answer as
given by all ten humans, so its accuracy is exact match (after the stripping above).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

HUMANS = 10  # answers per question in VQA v2; a single answer stands for this many humans
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # the official `manualMap`
ARTICLES = ("a", "an", "the")
# As the official code has them. "(?!<=\d)" is a lookahead, not the lookbehind it looks like: every period not
# followed by a digit goes ("3.5" keeps its point, "5." and "mr.smith" lose theirs).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
PERIOD_STRIP_COUNT = int(re.UNICODE)  # the official code passes re.UNICODE (32) where sub() takes `count`
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def clean(text: str) -> str:
    """What the official code does to every answer first: newlines and tabs become spaces, the ends are stripped."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official `processPunctuation`: a mark next to a space (or any mark, in text holding a digit-comma-digit
    number) is removed, any other becomes a space; then periods not followed by a digit are removed."""
    out = text
    comma_number = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        # the test reads the original text, not `out`, as the official code does
        out = out.replace(p, "") if (p + " " in text or " " + p in text) or comma_number else out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower case, number words to digits, articles dropped, contractions
    restored, words joined by single spaces."""
    words = [NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official code compares it when the humans disagree."""
    return process_digit_article(process_punctuation(clean(text)))


# Answers repeat a lot (VQA v2's ~4.4M human answers hold ~200k distinct ones): normalise each once
_normalized = lru_cache(maxsize=1 << 18)(normalize_answer)


def human_answers(qa: Mapping[str, Any]) -> list[str]:
    """The human answers of a canonical qa entry: its `answers` when it has several, else its one answer (its
    only `answers` entry, or `answer`) as given by all ten humans."""
    answers = list(qa.get("answers") or [])
    return answers if len(answers) > 1 else (answers or [qa["answer"]]) * HUMANS


def _compared(answers: Sequence[str]) -> tuple[list[str], bool]:
    """The answers as compared, and whether they were normalised (the humans disagree)."""
    gts = [clean(a) for a in answers]
    normalised = len(set(gts)) > 1
    return ([_normalized(g) for g in gts] if normalised else gts), normalised


def _agreement(pred: str, gts: list[str]) -> float:
    """Mean over the leave-one-out subsets of min(1, matches / 3), summed in the official order."""
    matches = gts.count(pred)
    return sum(min(1, (matches - (g == pred)) / 3) for g in gts) / len(gts)


def question_accuracy(pred: str, answers: Sequence[str]) -> float:
    """The official accuracy of answering `pred` to a question with these human answers (one answer: ten humans)."""
    if not answers:
        raise ValueError("a question needs at least one human answer to be scored")
    answers = list(answers) if len(answers) > 1 else list(answers) * HUMANS
    gts, normalised = _compared(answers)
    return _agreement(_normalized(pred) if normalised else clean(pred), gts)


def group_means(scores: Sequence[float], groups: Sequence[str | None]) -> dict[str, float]:
    """Mean score per group (sorted by name), as the official per-type accuracies; None belongs to no group."""
    by: dict[str, list[float]] = {}
    for score, group in zip(scores, groups, strict=True):
        if group is not None:
            by.setdefault(group, []).append(score)
    return {g: float(sum(by[g])) / len(by[g]) for g in sorted(by)}


@dataclass(frozen=True)
class VQAAccuracy:
    """The official report, as fractions 0-1: overall, per answer type, per question type, per question."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: list[float]


def vqa_accuracy(preds: Sequence[str], answers: Sequence[Sequence[str]],
                 answer_types: Sequence[str | None] | None = None,
                 question_types: Sequence[str | None] | None = None) -> VQAAccuracy:
    """The official accuracy of `preds`, one per question, against each question's human answers; questions
    without an answer or question type (None) count overall but in no per-type accuracy."""
    if len(preds) != len(answers) or not answers:
        raise ValueError(f"need one prediction per question and some questions, got {len(preds)} predictions for "
                         f"{len(answers)} questions")
    scores = [question_accuracy(p, a) for p, a in zip(preds, answers, strict=True)]
    none = [None] * len(scores)
    return VQAAccuracy(float(sum(scores)) / len(scores), group_means(scores, answer_types or none),
                       group_means(scores, question_types or none), scores)


class AnswerScorer:
    """The official accuracy of every answer of a vocabulary, for one question at a time: the soft targets a
    VQA classifier trains on. For ten answers, an answer given by k humans scores min(1, 0.3 * k) (as
    bottom-up-top-down's soft scores), the exact accuracy it would get at evaluation."""

    def __init__(self, vocabulary: Sequence[str]):
        self.exact: dict[str, list[int]] = {}
        self.normal: dict[str, list[int]] = {}
        for i, answer in enumerate(vocabulary):
            self.exact.setdefault(clean(answer), []).append(i)
            self.normal.setdefault(normalize_answer(answer), []).append(i)

    def scores(self, answers: Sequence[str]) -> dict[int, float]:
        """Vocabulary index -> accuracy of answering it, for the answers that score above 0."""
        answers = list(answers) if len(answers) > 1 else list(answers) * HUMANS
        gts, normalised = _compared(answers)
        table = self.normal if normalised else self.exact
        return {i: _agreement(key, gts) for key in dict.fromkeys(gts) for i in table.get(key, ())}
