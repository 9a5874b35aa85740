"""Which VQA questions the demo model gets wrong, and why: an error analysis of a finished run's test split.

    python -m bench.vqa_errors --preset demo --set data_root=/tmp/demo --out bench/results/vqa_errors.json

Loads the trained heads and the test split's frozen features from the catalog of the given config (nothing is
trained), answers every test question, and joins each answer with the scene it is about (the synthetic
annotations' `meta`: every shape's kind, colour, size and position). Reported:

- accuracy per question type, and per type by the number of shapes in the scene;
- for colour and shape questions: by the size of the object asked about, and the most frequent confusions
  (truth -> answer);
- the share of wrong answers that name a colour or shape present elsewhere in the scene (a binding error: the
  attribute was seen, but not bound to the right object) against one absent from it (a perception error).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mmcore.catalog import Catalog
from mmcore.config import load_config
from mmcore.data.records import ANNOTATIONS
from mmcore.features import load_features
from mmcore.training.heads import load_heads, predict_answers, qa_pairs
from mmcore.training.loop import select_device


def _scenes(raw: Path) -> dict[str, list[dict]]:
    """Sample id -> the shapes of its scene, from the synthetic annotations."""
    scenes = {}
    with open(raw / ANNOTATIONS, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            scenes[record["id"]] = record.get("meta", {}).get("shapes", [])
    return scenes


def _target(qa: dict, shapes: list[dict]) -> dict | None:
    """The object a colour or shape question is about: the shape named ("what color is the circle?") or the
    one at the named position ("what shape is at the top right?")."""
    q = qa["question"]
    if qa["type"] == "color":
        named = [s for s in shapes if re.search(rf"\b{s['shape']}\b", q)]
    else:
        named = [s for s in shapes if q.rstrip("?").endswith(s["position"])]
    return named[0] if len(named) == 1 else None


def analyse(rows: list[dict]) -> dict[str, Any]:
    """The figures of the module docstring from rows of (type, truth, answer, shapes, target)."""
    out: dict[str, Any] = {"questions": len(rows)}
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_count: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_type[r["type"]].append(r["right"])
        by_count[f"{r['type']} @ {len(r['shapes'])} shapes"].append(r["right"])
    mean = lambda xs: round(sum(xs) / len(xs), 4)  # noqa: E731
    out["accuracy"] = {t: mean(v) for t, v in sorted(by_type.items())}
    out["accuracy_by_shapes_in_scene"] = {k: [mean(v), len(v)] for k, v in sorted(by_count.items())}
    for kind, attr in (("color", "color"), ("shape", "shape")):
        mine = [r for r in rows if r["type"] == kind and r["target"] is not None]
        by_size: dict[str, list[bool]] = defaultdict(list)
        for r in mine:
            by_size[r["target"]["size"]].append(r["right"])
        wrong = [r for r in mine if not r["right"]]
        elsewhere = sum(any(s[attr] == r["answer"] for s in r["shapes"] if s is not r["target"]) for r in wrong)
        out[kind] = {
            "accuracy_by_target_size": {k: [mean(v), len(v)] for k, v in sorted(by_size.items())},
            "wrong": len(wrong),
            "wrong_answer_present_elsewhere_in_scene": elsewhere,
            "top_confusions": Counter(f"{r['truth']} -> {r['answer']}" for r in wrong).most_common(8),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out")
    args = parser.parse_args()
    cfg = load_config(args.preset, dict(item.split("=", 1) for item in args.set))
    cat = Catalog.from_config(cfg)
    device = select_device("cpu")
    heads = load_heads(cat.heads.heads, device)
    test = load_features(cat.features, cat.processed, ("test",))
    pairs = qa_pairs(test, {a: i for i, a in enumerate(heads.answers)})
    predicted = predict_answers(heads.vqa, test, [p[0] for p in pairs], [p[1] for p in pairs], device).tolist()
    scenes = _scenes(Path(cat.raw))
    qas = [(i, qa) for i, row in enumerate(test.qa) for qa in row]
    rows = []
    for (i, qa), answer in zip(qas, predicted, strict=True):
        shapes = scenes.get(test.sample_ids[i], [])
        rows.append({"type": qa["type"], "truth": qa["answer"], "answer": heads.answers[answer],
                     "right": heads.answers[answer] == qa["answer"], "shapes": shapes, "target": _target(qa, shapes)})
    result = analyse(rows)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
