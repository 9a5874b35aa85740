"""Translation BLEU and chrF equal sacrebleu's command line with its standard settings, case-insensitive."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sacrebleu

from mmcore.metrics import bleu, chrf

EN_HYPS = ["A red circle on the left.", "Two blue squares, top right", "the Green triangle isn't small", ""]
EN_REFS = [["a red circle on the left", "A circle, red, at the left."],
           ["two blue squares at the top right", "Two squares."],
           ["The green triangle is not small.", "a small green triangle"], ["a yellow diamond", "A diamond."]]
ZH_HYPS = ["左边有一个红色圆形", "右上角有两个蓝色正方形。", "绿色三角形ABC", ""]
ZH_REFS = [["左边有一个红色圆形。"], ["右上角有两个蓝色正方形"], ["中间有一个绿色三角形abc"], ["黄色菱形"]]


def _cli(tmp_path, hyps: list[str], refs: list[list[str]], pair: str) -> tuple[float, float]:
    """The BLEU and chrF of `sacrebleu REFS -i HYPS -l PAIR -lc --chrf-lowercase -m bleu chrf`."""
    ref_files = []
    for i in range(len(refs[0])):
        ref_files.append(tmp_path / f"ref{i}.txt")
        ref_files[-1].write_text("\n".join(r[i] for r in refs) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "sacrebleu", *map(str, ref_files), "-i", str(tmp_path / "hyp.txt"),
                          "-l", pair, "-lc", "--chrf-lowercase", "-m", "bleu", "chrf", "-w", "10", "-f", "json"],
                         capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    tok = "zh" if pair.endswith("zh") else "13a"
    assert f"case:lc|eff:no|tok:{tok}|smooth:exp" in found[0]["signature"]
    assert "case:lc" in found[1]["signature"] and "nc:6|nw:0" in found[1]["signature"]
    return found[0]["score"], found[1]["score"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_bleu_and_chrf_equal_sacrebleus_command_line(tmp_path, lang):
    hyps, refs = (EN_HYPS, EN_REFS) if lang == "en" else (ZH_HYPS, ZH_REFS)
    cli_bleu, cli_chrf = _cli(tmp_path, hyps, refs, f"xx-{lang}")
    assert bleu(hyps, refs, lang) == pytest.approx(cli_bleu, abs=1e-8)
    assert chrf(hyps, refs) == pytest.approx(cli_chrf, abs=1e-8)


def test_bleu_and_chrf_equal_sacrebleus_api_and_ignore_case():
    streams = [[r[i] for r in EN_REFS] for i in range(2)]
    assert bleu(EN_HYPS, EN_REFS) == pytest.approx(
        sacrebleu.corpus_bleu(EN_HYPS, streams, tokenize="13a", lowercase=True).score, abs=1e-9)
    assert chrf(EN_HYPS, EN_REFS) == pytest.approx(
        sacrebleu.corpus_chrf([h.lower() for h in EN_HYPS], [[r.lower() for r in s] for s in streams]).score, abs=1e-9)
    assert bleu(ZH_HYPS, ZH_REFS, "zh") == pytest.approx(
        sacrebleu.corpus_bleu(ZH_HYPS, [[r[0] for r in ZH_REFS]], tokenize="zh", lowercase=True).score, abs=1e-9)
    upper = [h.upper() for h in EN_HYPS]
    assert bleu(upper, EN_REFS) == bleu(EN_HYPS, EN_REFS) and chrf(upper, EN_REFS) == chrf(EN_HYPS, EN_REFS)


def test_identical_is_100_uneven_references_and_bad_input():
    assert bleu(["a large red circle at the top left"], [["A large red circle at the top left"]]) == pytest.approx(100)
    assert bleu(["a red circle", "two blue squares on the left"],
                [["a red circle", "one red circle"], ["two blue squares on the left"]]) == pytest.approx(100)
    assert bleu(["红色圆形在左侧"], [["红色圆形在左侧"]], lang="zh") == pytest.approx(100)
    assert chrf(["红色圆形在左侧"], [["红色圆形在左侧"]]) == pytest.approx(100)
    assert chrf(["红色圆形在左侧"], [["蓝色方块在右侧"]]) < 40
    with pytest.raises(ValueError, match="reference list"):
        bleu(["a"], [])
