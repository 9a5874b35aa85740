from __future__ import annotations

from mmcore.text.tokenizer import TextTokenizer

TEXTS = ["a large red circle at the top left", "two shapes: a small blue square in the center",
         "左上方有一个大的红色圆形", "图中有两个形状：中间有一个小的蓝色正方形", "what color is the circle?"]


def _tok() -> TextTokenizer:
    return TextTokenizer.train(TEXTS * 5, vocab_size=200)


def test_round_trip_english_and_chinese(tmp_path):
    tok = _tok()
    path = tok.save(tmp_path / "tok.json")
    again = TextTokenizer.from_file(path)
    for text in TEXTS:
        ids = again.encode([text], 64)[0]
        assert ids[0] == again.bos_id and ids[-1] == again.eos_id
        assert again.decode(ids) == text.lower()


def test_hyphenated_words_and_clitics_decode_whole():
    texts = ["A person in a red T-shirt, close-up.", "The rightmost one's a well-known kite - isn't it?"]
    tok = TextTokenizer.train(texts * 3, vocab_size=200)
    assert [tok.decode(tok.encode([t], 64)[0]) for t in texts] == [
        "a person in a red t-shirt, close-up.", "the rightmost one's a well-known kite-isn't it?"]


def test_chinese_is_split_per_character():
    tok = _tok()
    ids = tok.encode(["红色圆形"], 16)[0]
    assert len(ids) == 2 + 4


def test_unknown_characters_become_unk_not_errors():
    tok = _tok()
    ids = tok.encode(["a purple 猫 circle"], 32)[0]
    assert tok.unk_id in ids
    assert "circle" in tok.decode(ids)


def test_max_len_cuts_but_keeps_markers():
    tok = _tok()
    ids = tok.encode([" ".join(["circle"] * 50)], 10)[0]
    assert len(ids) == 10 and ids[-1] == tok.eos_id


def test_pad_is_zero():
    assert _tok().pad_id == 0


def test_training_is_reproducible_across_processes():
    import subprocess
    import sys

    code = ("from mmcore.text.tokenizer import TextTokenizer; import sys; "
            f"sys.stdout.write(TextTokenizer.train({TEXTS!r} * 3, vocab_size=60).to_str())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(outs) == 1


def test_small_vocabulary_keeps_the_most_frequent_characters():
    tok = TextTokenizer.train(["aaa b", "aaa c"], vocab_size=8)  # 4 specials + 2 chars x 2 forms
    assert tok.vocab_size == 8
    assert tok.unk_id not in tok.encode(["a aa"], 8)[0]
