"""The official VQA accuracy, held to a Python 3 port of the official evaluation code (tests/reference/): the same
per-question, overall, per-answer-type and per-question-type accuracies on a fixture in the official format, the
same normalisation on arbitrary text, and soft training scores that are the accuracy each answer would get."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcore.vqa_eval import (
    AnswerScorer,
    clean,
    human_answers,
    normalize_answer,
    question_accuracy,
    vqa_accuracy,
)
from tests.reference import vqa_fixture as F
from tests.reference.vqa_eval_official import VQAEval


def _mean(values: list[float]) -> float:
    return float(sum(values)) / len(values)


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return F.official_scores(F.write(tmp_path_factory.mktemp("vqa")))


@pytest.fixture(scope="module")
def ours():
    rows = F.QUESTIONS.values()
    return vqa_accuracy([r[5] for r in rows], [r[4] for r in rows], [r[3] for r in rows], [r[2] for r in rows])


def test_accuracy_equals_the_official_code(official, ours):
    assert dict(zip(F.QUESTIONS, ours.per_question, strict=True)) == pytest.approx(official["per_question"],
                                                                                   abs=1e-12)
    assert ours.overall == pytest.approx(_mean(official["overall"]), abs=1e-6)
    assert ours.per_answer_type == pytest.approx({t: _mean(v) for t, v in official["per_answer_type"].items()},
                                                 abs=1e-6)
    assert ours.per_question_type == pytest.approx({t: _mean(v) for t, v in official["per_question_type"].items()},
                                                   abs=1e-6)
    # and its rounded report is ours in percent, rounded the same way
    report = official["accuracy"]
    assert report["overall"] == round(100 * ours.overall, 2)
    assert report["perAnswerType"] == {t: round(100 * v, 2) for t, v in ours.per_answer_type.items()}
    assert report["perQuestionType"] == {t: round(100 * v, 2) for t, v in ours.per_question_type.items()}


def test_the_fixture_scores_what_its_comments_say(ours):
    assert [round(a, 6) for a in ours.per_question] == [1, 0, 1, 0.6, 1, 0.6, 0.3, 0.6, 1, 0.9, 0.3, 0.3, 1, 0.3,
                                                        0.9, 1]
    assert ours.per_answer_type == pytest.approx({"number": 0.7, "other": 6.7 / 9, "yes/no": 1.3 / 3})


# Text built from what the normalisation acts on: marks, digits, commas and periods, articles, number words and
# contractions, in any case and with any spacing.
_PIECES = st.sampled_from([*"abc019 .,;/-!?'\"()[]{}=+_><@`\\:&\t\n", " a ", " the ", "An", "two", "None", "TEN",
                           "dont", "Im", "isnt", "1,000", "3.5", "st.", "y'all"])
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_normalisation_equals_the_official_code(text):
    port = VQAEval(_Empty(), _Empty())
    assert normalize_answer(text) == port.processDigitArticle(port.processPunctuation(clean(text)))


class _Empty:
    def getQuesIds(self) -> list:
        return []


class _Set:
    """The two attributes VQAEval reads of its VQA objects: question ids and question id -> entry."""

    def __init__(self, qa: dict):
        self.qa = qa

    def getQuesIds(self) -> list:
        return list(self.qa)


def _official_accuracy(pred: str, answers: list[str]) -> float:
    gts = {1: {"question_type": "q", "answer_type": "a",
               "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]}}
    ev = VQAEval(_Set(gts), _Set({1: {"answer": pred}}))
    seen: list[float] = []
    ev.setEvalQA = lambda qid, acc: seen.append(acc)
    ev.updateProgress = lambda progress: None
    ev.evaluate()
    return seen[0]


_ANSWER = st.sampled_from(["2", "two", "2.", "a dog", "dog", "the dog", "Dog!", "dont know", "don't know", "1,000",
                           "1000", "yes", "Yes", "no", "red, white", "red white", "red/white", " pizza\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_ANSWER, min_size=10, max_size=10), _ANSWER)
def test_question_accuracy_equals_the_official_code(answers, pred):
    assert question_accuracy(pred, answers) == _official_accuracy(pred, answers)


def test_one_answer_counts_as_ten_humans_and_scores_exact_match():
    assert human_answers({"answer": "red"}) == human_answers({"answer": "red", "answers": ["red"]}) == ["red"] * 10
    assert human_answers({"answer": "2", "answers": ["2", "two"]}) == ["2", "two"]
    assert question_accuracy("red", ["red"]) == 1.0
    # the humans agree, so nothing is normalised (as the official code does): exact match after stripping
    assert question_accuracy(" red\n", ["red"]) == 1.0
    assert question_accuracy("Red", ["red"]) == question_accuracy("a red", ["red"]) == 0.0
    single = vqa_accuracy(["red", "blue", "yes"], [["red"], ["red"], ["yes"]], [None] * 3, None)
    assert single.overall == 2 / 3 and single.per_answer_type == {} and single.per_question_type == {}
    with pytest.raises(ValueError, match="one prediction per question"):
        vqa_accuracy(["red"], [])


def test_soft_scores_are_the_accuracy_of_each_answer():
    answers = ["2"] * 4 + ["two", "3", "3", "4", "five", "a lot"]  # "2" by five humans once normalised
    vocab = ["2", "two", "3", "4", "5", "lot", "6", "2."]
    scores = AnswerScorer(vocab).scores(answers)
    assert scores == {i: pytest.approx(question_accuracy(v, answers)) for i, v in enumerate(vocab)
                      if question_accuracy(v, answers) > 0}
    # ten answers: k humans score min(1, 0.3 k)
    assert {vocab[i]: round(s, 6) for i, s in scores.items()} == {"2": 1.0, "two": 1.0, "2.": 1.0, "3": 0.6,
                                                                  "4": 0.3, "5": 0.3, "lot": 0.3}
    # humans that agree are compared as they are: "two" is not "2"
    assert AnswerScorer(vocab).scores(["2"]) == {0: 1.0}
    # humans that disagree are normalised, and so is every answer of the vocabulary: "two" and "2." are "2"
    assert AnswerScorer(vocab).scores(["2"] * 3 + ["3"] * 7) == {0: pytest.approx(0.9), 1: pytest.approx(0.9),
                                                                 7: pytest.approx(0.9), 2: 1.0}


def test_soft_scores_on_the_fixture_equal_the_official_accuracy(official):
    vocab = sorted({a for row in F.QUESTIONS.values() for a in [*row[4], row[5]]})
    scorer = AnswerScorer(vocab)
    for qid, (*_, answers, pred) in F.QUESTIONS.items():
        assert scorer.scores(answers).get(vocab.index(pred), 0.0) == pytest.approx(official["per_question"][qid])


def test_fixture_files_are_the_official_format(tmp_path: Path):
    root = F.write(tmp_path)
    assert {p.name for p in root.iterdir()} == {F.QUESTIONS_FILE, F.ANNOTATIONS_FILE, "results.json"}
    ann = F.annotations()["annotations"][2]
    assert ann["multiple_choice_answer"] == "2" and [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
