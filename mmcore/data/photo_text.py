"""The words of the photos fixture (mmcore/data/photos.py): five captions and VQA v2 questions per scene.

Captions are cased and punctuated like COCO's, with clitics and hyphens ("There's no tent; it's a red
ball.", "a person in a green T-shirt"), and say what a model can learn from the pixels: the objects, their
colours, counts and left-to-right order, the sky and the ground. Each question has ten answers like VQA's
human ones: mostly the right one, with some disagreement (a neighbouring count or colour, a synonym).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

PLURALS = {"ball": "balls", "box": "boxes", "tent": "tents", "kite": "kites", "person": "people"}
NUMBERS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four"}
WHERE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
SKY_WORDS = {"clear": "a clear blue sky", "sunset": "an orange sunset sky", "overcast": "a grey, overcast sky",
             "night": "a dark night-time sky"}
SKY_COLOR = {"clear": "blue", "sunset": "orange", "overcast": "gray", "night": "black"}  # VQA's spelling
GROUND_WORDS = {"grass": "green grass", "sand": "a sandy beach", "snow": "a snow-covered field"}
FRAME_WORDS = {"landscape": "A snapshot", "portrait": "A tall, portrait-format photo",
               "panorama": "A wide-angle panorama"}
# What a few of the ten annotators answer instead: a near miss, never a random word
NEAR = {"red": "orange", "orange": "red", "yellow": "orange", "green": "blue", "blue": "purple", "purple": "blue",
        "gray": "white", "black": "blue", "yes": "no", "no": "yes", "ball": "balloon", "box": "crate",
        "tent": "house", "kite": "bird", "person": "man", "grass": "field", "sand": "beach", "snow": "ice"}
# How often each question type is asked (VQA v2 asks "other" questions most, then yes/no, then numbers)
TYPE_WEIGHTS = {"what color is the": 0.3, "what is the": 0.2, "is there a": 0.25, "how many": 0.2, "is this a": 0.05}
DISAGREE_P = (0.5, 0.2, 0.15, 0.1, 0.05)  # 0-4 of the ten answers differ from the right one
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: dict[str, Any], grey: bool, size: bool = False) -> str:
    """ "a red ball", "a small blue box", "a person in a green T-shirt"; a greyscale picture shows no colours."""
    colour = "" if grey else obj["color"]
    if obj["kind"] == "person":
        shirt = f"{_a(colour)} {colour} T-shirt" if colour else "a T-shirt"
        return f"{_a(obj['size']) + ' ' + obj['size'] if size else 'a'} person in {shirt}"
    words = [w for w in (obj["size"] if size else "", colour, obj["kind"]) if w]
    return f"{_a(words[0])} {' '.join(words)}"


def group_phrase(kind: str, colour: str, n: int) -> str:
    """ "two red balls", "two people in red T-shirts", "a kite" (colour "": not said)."""
    if kind == "person":
        shirt = f"{colour} T-shirt" if colour else "T-shirt"
        return (f"a person in {_a(shirt)} {shirt}" if n == 1 else f"{NUMBERS[n]} people in {shirt}s")
    words = " ".join(w for w in (colour, kind if n == 1 else PLURALS[kind]) if w)
    return f"{_a(words)} {words}" if n == 1 else f"{NUMBERS[n]} {words}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def captions(scene: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """Five captions of one scene, each from a different angle (positions, counts, absence, order, setting)."""
    objs, grey = scene["objects"], scene["grey"]
    kinds = Counter(o["kind"] for o in objs)
    groups = Counter((o["kind"], "" if grey else o["color"]) for o in objs)
    counted = _join([group_phrase(k, c, n) for (k, c), n in groups.items()])
    sky = "the sky" if grey else SKY_WORDS[scene["sky"]]
    ground = GROUND_WORDS[scene["ground"]].replace("green ", "") if grey else GROUND_WORDS[scene["ground"]]
    first = _join([f"{noun_phrase(o, grey, size=True)} {WHERE[o['position']]}" for o in objs])
    absent = [k for k in PLURALS if k not in kinds]
    missing = absent[int(rng.integers(len(absent)))]
    if len(objs) == 1:
        order = f"The picture's only object is {noun_phrase(objs[0], grey)}"
    else:
        order = (f"From left to right: {_join([noun_phrase(o, grey) for o in objs])}; the rightmost one's "
                 f"{noun_phrase(objs[-1], grey)}")
    style = "A black-and-white photo" if grey else FRAME_WORDS[scene["frame"]]
    there = "there's" if sum(groups.values()) == 1 else "there are"
    negation = (f"There's no {missing} here, just {counted}" if rng.random() < 0.5
                else f"You don't see any {PLURALS[missing]}, but {there} {counted}")
    return [
        _cap(first) + ".",
        f"{_cap(counted)} on {ground} under {sky}.",
        negation + ".",
        order + ".",
        f"{style} of {counted} on {ground}.",
    ]


def karpathy_tokens(raw: str) -> list[str]:
    """Lower-cased words as Karpathy's files list them (punctuation dropped, clitics and hyphens kept)."""
    return _TOKEN.findall(raw.lower())


def _question_pool(scene: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Every (question, right answer, answer type, question type) this scene can answer unambiguously."""
    objs, grey = scene["objects"], scene["grey"]
    kinds = Counter(o["kind"] for o in objs)
    pairs = Counter((o["kind"], o["color"]) for o in objs)
    absent = [k for k in PLURALS if k not in kinds]
    pool = [(f"How many {PLURALS[k]} are there?", str(kinds[k]), "number", "how many") for k in (*kinds, absent[0])]
    pool += [("Is this a black and white photo?", "yes" if grey else "no", "yes/no", "is this a"),
             ("What is the ground covered with?", scene["ground"], "other", "what is the"),
             ("What is the object on the far left?", objs[0]["kind"], "other", "what is the")]
    pool += [(f"Is there {_a(k)} {k}?", "yes" if kinds[k] else "no", "yes/no", "is there a") for k in PLURALS]
    if not grey:
        pool.append(("What color is the sky?", SKY_COLOR[scene["sky"]], "other", "what color is the"))
        pool += [(f"What color is the {o['kind']}?" if o["kind"] != "person" else "What color is the person's "
                  "T-shirt?", o["color"], "other", "what color is the") for o in objs if kinds[o["kind"]] == 1]
        pool += [(f"Is there {_a(c)} {c} {k}?", "yes" if pairs[k, c] else "no", "yes/no", "is there a")
                 for k, c in pairs]
    return pool


def questions(scene: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """4-6 distinct questions, each with ten answers and their annotators' confidence."""
    pool = _question_pool(scene)
    per_type = Counter(q[3] for q in pool)
    p = np.array([TYPE_WEIGHTS[q[3]] / per_type[q[3]] for q in pool])  # each type drawn as often as it weighs
    picked = rng.choice(len(pool), size=min(len(pool), int(rng.integers(4, 7))), replace=False, p=p / p.sum())
    out = []
    for i in sorted(int(p) for p in picked):
        question, right, answer_type, question_type = pool[i]
        answers, confidence = _ten_answers(right, answer_type, rng)
        out.append({"question": question, "answer": right, "answers": answers, "confidence": confidence,
                    "answer_type": answer_type, "question_type": question_type})
    return out


def _ten_answers(right: str, answer_type: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Ten annotators: most give `right`; 0-4 give a near miss (a count off by one, a neighbouring colour)."""
    wrong = int(rng.choice(len(DISAGREE_P), p=DISAGREE_P))
    if answer_type == "number":
        miss = str(int(right) + 1) if right == "0" or rng.random() < 0.5 else str(int(right) - 1)
    else:
        miss = NEAR.get(right, right)
    answers = [right] * 10
    for k in rng.choice(10, size=wrong, replace=False):
        answers[int(k)] = miss
    confidence = ["yes" if a == right and rng.random() < 0.85 else "maybe" for a in answers]
    return answers, confidence
