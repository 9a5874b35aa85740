"""Caption tokens as coco-caption makes them: Stanford's PTB tokenizer (CoreNLP 3.4.1, `-preserveLines
-lowerCase`), then the punctuation tokens of pycocoevalcap's `tokenizer/ptbtokenizer.py` removed.

A port of the rules captions meet, not of the whole lexer: lower case; clitics split off ("car's" -> "car 's",
"doesn't" -> "does n't", "can't" -> "ca n't", "cannot" -> "can not", "gonna" -> "gon na"); hyphenated words
kept ("t-shirt"); numbers kept whole ("1,000", "3.5", "3:30"); "$", "#" and "%" split off; a final period
split off unless the word is an abbreviation ("u.s.", "e.g.", "mr.", "st.", "etc."); brackets become
"-lrb-", "-rrb-", ... and, as in coco-caption, stay (its list names them in upper case, the lower-cased
output never matches); runs like "!!!" and "?!" stay, single marks go. Checked against the Java tokenizer
on a fuzz of such words and marks. Known gaps: hashtags ("#well-known"), emoticons, "y'all", "no." before a
number, "10:30am", "&&", apostrophes between digits (5'10"), and symbols such as "°".
"""

from __future__ import annotations

import html
import re

# pycocoevalcap 1.2, tokenizer/ptbtokenizer.py: the tokens dropped after tokenizing
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])
# words whose final period CoreNLP 3.4.1 keeps (checked against its PTBTokenizer; "sat.", "sun.",
# "no.", "vol.", "fig." are split)
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof capt lt col sgt gov sen rep gen messrs st ft mt ave rd blvd jr sr vs etc est inc ltd "
    "corp co bros dept univ assn jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs "
    "fri".split())
_UNICODE = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": " -- ",
                          "\u2013": " -- ", "\u2026": " ... "})
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- ",
             '"': " '' "}
_BRACKET_TOKENS = frozenset(t.strip() for t in _BRACKETS.values())
_ONLY_MARKS = re.compile(r"-{3,}|\.{4,}")
_SPLIT_ALWAYS = re.compile(r'[()\[\]{}"]')
# inside a word: dashes, ";", "*", and "," or ":" unless between digits ("1,000", "3:30")
_INNER = re.compile(r"(--+|;|\*|,(?!\d)|(?<!\d),|:(?!\d)|(?<!\d):)")
_LEAD = re.compile(r"^(--+|-(?!\d)|\$|#+(?![a-z])|`+|[,;:]|[!?]+|\.\.\.+|\.(?=\D))")
_TRAIL = re.compile(r"(--+|-|%|'|`|[,;:]|[!?]+|\.\.\.+|\.)$")
_CLITIC = re.compile(r"(.+?)('s|'re|'ve|'ll|'d|'m|n't)")
# a leading "'" that belongs to the word: clitics, "'em", "'90s", "'tis", "'n'"
_APOSTROPHE_WORD = re.compile(r"'(s|re|ve|ll|d|m|em|cause|til|tis|twas|\d+s)(?![a-z0-9])|'n'")
_SPECIAL = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"],
            "gimme": ["gim", "me"], "lemme": ["lem", "me"], "'tis": ["'t", "is"], "'twas": ["'t", "was"]}
_ABBREVIATED = re.compile(r"[a-z](\.[a-z])*")  # "a", "u.s", "e.g" (before their final period)


def ptb_tokens(text: str) -> list[str]:
    """The tokens coco-caption scores for `text`: PTB-tokenized, lower case, punctuation tokens removed."""
    text = html.unescape(text).translate(_UNICODE).lower().replace("''", '"')
    text = _SPLIT_ALWAYS.sub(lambda m: _BRACKETS[m.group()], text)
    return [t for chunk in text.split() for t in _chunk(chunk) if t not in PUNCTUATIONS]


def _chunk(chunk: str) -> list[str]:
    """The tokens of one whitespace-free piece: leading and trailing marks peeled off, then its core."""
    if chunk in _BRACKET_TOKENS:
        return [chunk]
    if _ONLY_MARKS.fullmatch(chunk):  # "----" -> "--", "...." -> "..."
        return [chunk[:3] if chunk[0] == "." else chunk[:2]]
    head: list[str] = []
    while len(chunk) > 1:
        if (m := _LEAD.match(chunk)) and len(chunk) > len(m.group()):
            head.append(m.group()[:3])  # "...." -> "..."
            chunk = chunk[m.end():]
        elif chunk[0] == "'" and not _APOSTROPHE_WORD.match(chunk):
            head.append("`")  # an opening quote
            chunk = chunk[1:]
        else:
            break
    tail: list[str] = []
    while (m := _TRAIL.search(chunk)) and len(chunk) > len(m.group()):
        mark, word = m.group(), chunk[: m.start()]
        if mark[0] == "." and (word in ABBREVIATIONS or _ABBREVIATED.fullmatch(word)):
            if mark != ".":  # "etc...." -> "etc." "..."
                chunk = word + "."
                tail.append("...")
            break
        if mark == "'" and _APOSTROPHE_WORD.fullmatch(chunk):
            break
        tail.append(mark[:3] if mark[0] == "." else mark)
        chunk = word
    core = [t for piece in _INNER.split(chunk) if piece for t in (["--"] if piece[:2] == "--" else _word(piece))]
    return head + core + tail[::-1]


def _word(word: str) -> list[str]:
    """A word with its clitics split off, from the end: "she'd've" -> she 'd 've, "can't" -> ca n't."""
    if word in _SPECIAL:
        return _SPECIAL[word]
    if "'n'" in word[1:-1]:  # rock'n'roll
        left, right = word.split("'n'", 1)
        return [*_word(left), "'n'", *_word(right)]
    m = _CLITIC.fullmatch(word)
    if m:
        return [*_word(m.group(1)), m.group(2)]
    return [word]
