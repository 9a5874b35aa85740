"""A small VQA v2 set in the official JSON format (questions, annotations with ten answers each, results), shared
by the ingest tests and the tests that hold mmcore.vqa_eval to the official evaluation code.

The answers exercise what the official normalisation does: punctuation (next to a space or not), commas in
numbers and in lists, periods before digits or not, articles, number words, contractions, case, stray
whitespace, and questions where all ten humans agree (then nothing is normalised). The predictions score 0,
0.3, 0.6, 0.9 and 1 on different questions.
"""

from __future__ import annotations

import json
from pathlib import Path

# question id -> (image id, question, question type, answer type, ten answers, prediction)
QUESTIONS = {
    101: (1, "Is the man wearing a hat?", "is the", "yes/no", ["yes"] * 10, "yes"),  # all agree: 1
    102: (1, "Is it raining?", "is it", "yes/no", ["no"] * 10, "No"),  # all agree, so no lower-casing: 0
    103: (1, "How many dogs are there?", "how many", "number",
          ["2", "2", "two", "2", "3", "2", "2 ", "two", "2", "2."], "two"),  # 9 say 2 after normalising: 1
    104: (1, "How many people are in the photo?", "how many people are in", "number",
          ["1,000", "1000", "one thousand", "100", "100", "lots", "many", "a lot", "1 000", "100"], "1,000"),  # 0.6
    201: (2, "What color is the bus?", "what color is the", "other",
          ["red, white, and blue", "red white and blue", "red,white,blue", "red white blue", "red, white and blue",
           "red/white/blue", "red white & blue", "blue", "Red, White, and Blue", "red-white-blue"],
          "red/white/blue"),  # 4 say "red white blue": 1
    202: (2, "What is the man holding?", "what is the man", "other",
          ["an umbrella", "umbrella", "the umbrella", "umbrella", "Umbrella.", "a bag", "bag", "umbrellas",
           "umbrella ", "umbrella!"], "a bag"),  # 0.6
    203: (2, "Why is the dog sitting?", "why is the", "other",
          ["dont know", "don't know", "i dont know", "resting", "tired", "resting", "resting", "waiting", "idk",
           "tired"], "I dont know"),  # 0.3
    204: (2, "What time is it?", "what time", "other",
          ["3:00", "3:00 pm", "afternoon", "3 o'clock", "3 oclock", "3:00", "noon", "3:00", "3pm", "day"],
          "3 oclock"),  # 0.6
    301: (3, "What is the name of the street?", "what is the name", "other",
          ["st. patrick", "st patrick", "st. patrick's", "main st.", "st.patrick", "patrick st", "st. patrick",
           "unknown", "st patrick", "(main)"], "St. Patrick"),  # 1
    302: (3, "What number is on the train?", "what number is", "number",
          ["3.5", "35", "3.5.", "3,5", "three", "3", "3.5", "5", "35", "3 5"], "3.5"),  # 0.9
    303: (3, "How many cars are visible?", "how many", "number",
          ["none", "0", "zero", "no cars", "0", "1", "none", "zero ", "0", "nothing"], "1"),  # 0.3
    304: (3, "Are these people happy?", "are these", "yes/no",
          ["yes", "yes", "yes", "no", "yes", "yes", "yes", "yes", "yes", "yes"], "no"),  # 0.3
    305: (4, "What is on the plate?", "what is on the", "other",
          ["pizza\n", "pizza", "pizza", "\tpizza", "pizza", "pizza", "pizza", "pizza", "pizza", "pizza"],
          "pizza "),  # all agree once cleaned: 1
    306: (4, "What brand is the laptop?", "what brand", "other",
          ["apple", "Apple", "mac", "dell", "apple ", "hp", "sony", "apple computer", "Apple!", "macbook"],
          "mac"),  # 0.3
    307: (4, "What is the dog wearing?", "what is the", "other",
          ["a collar", "collar", "a scarf", "the scarf", "scarf", "bandana", "a bandana", "collar", "\"scarf\"",
           "nothing"], "the collar"),  # 0.9
    308: (4, "What does the sign say?", "what does the", "other",
          ["stop", "stop!", "stop sign", "STOP", "stop", "[stop]", "stop.", "halt", "stop", "stop; go"],
          "Stop!"),  # 1
}
SUBTYPE = "val2014"
QUESTIONS_FILE = f"v2_OpenEnded_mscoco_{SUBTYPE}_questions.json"
ANNOTATIONS_FILE = f"v2_mscoco_{SUBTYPE}_annotations.json"


def _majority(answers: list[str]) -> str:
    return max(answers, key=lambda a: (answers.count(a), -answers.index(a)))


def questions() -> dict:
    """The questions file, with the fields the official VQA class copies into its results."""
    return {"info": {"description": "test fixture"}, "task_type": "Open-Ended", "data_type": "mscoco",
            "data_subtype": SUBTYPE, "license": {"name": "test"},
            "questions": [{"image_id": image, "question": text, "question_id": qid}
                          for qid, (image, text, *_) in QUESTIONS.items()]}


def annotations() -> dict:
    """The annotations file: ten answers per question, with ids 1..10 as VQA v2 numbers them."""
    return {"info": {}, "license": {}, "data_subtype": SUBTYPE, "annotations": [
        {"question_id": qid, "image_id": image, "question_type": qtype, "answer_type": atype,
         "multiple_choice_answer": _majority(answers),
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}
        for qid, (image, _, qtype, atype, answers, _) in QUESTIONS.items()]}


def results() -> list[dict]:
    """The results file: one predicted answer per question."""
    return [{"question_id": qid, "answer": pred} for qid, (*_, pred) in QUESTIONS.items()]


def write(root: Path) -> Path:
    """The questions, annotations and results files under `root`; returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, doc in ((QUESTIONS_FILE, questions()), (ANNOTATIONS_FILE, annotations()), ("results.json", results())):
        (root / name).write_text(json.dumps(doc), encoding="utf-8")
    return root


def official_scores(root: Path) -> dict:
    """The official evaluation of the fixture's results (`official_evaluation`)."""
    return official_evaluation(root / ANNOTATIONS_FILE, root / QUESTIONS_FILE, root / "results.json")


def official_evaluation(annotations: Path, questions: Path, results: Path) -> dict:
    """The official evaluation of a results file, before its rounding: the per-question accuracies and their
    lists per answer and question type as `evaluate` hands them to `setAccuracy` (which rounds), and its
    rounded report (`accuracy`, percentages)."""
    from tests.reference.vqa_eval_official import VQAEval
    from tests.reference.vqa_tools_official import VQA

    vqa = VQA(str(annotations), str(questions))
    res = vqa.loadRes(str(results), str(questions))
    ev = VQAEval(vqa, res, n=2)
    out: dict = {"per_question": {}}
    set_accuracy, set_qa = ev.setAccuracy, ev.setEvalQA

    def keep_accuracy(acc_qa: list, acc_ques_type: dict, acc_ans_type: dict) -> None:
        out.update(overall=acc_qa, per_question_type=acc_ques_type, per_answer_type=acc_ans_type)
        set_accuracy(acc_qa, acc_ques_type, acc_ans_type)

    def keep_qa(qid: int, acc: float) -> None:
        out["per_question"][qid] = acc
        set_qa(qid, acc)

    ev.setAccuracy, ev.setEvalQA = keep_accuracy, keep_qa
    ev.evaluate()
    return {**out, "accuracy": ev.accuracy}
