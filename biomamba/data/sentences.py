"""A rule-based sentence splitter fit for biomedical abstracts.

A boundary is ".", "?" or "!" (plus closing quotes/brackets) followed by whitespace and a plausible
sentence start: an uppercase letter, a digit, an opening bracket or quote, a Greek letter, or a
mixed-case token such as "mRNA", "p53", "pH". It is not a boundary when
  - the word before the period is an abbreviation ("et al.", "e.g.", "i.e.", "vs.", "Fig.", "approx.",
    "ca.", "St.", months, ...), a dotted acronym ("U.S.", "e.g") or "No." before a number;
  - it sits inside unclosed parentheses or brackets ("(n = 12, p < 0.05. see ...)").
Decimals ("0.05", "1.5-fold") never split: no whitespace follows the point. Known misses: a sentence
that really ends with "et al." or an abbreviation before a capitalised word stays joined.
Splitting never loses or alters text: " ".join(split_sentences(t)) == " ".join(t.split()).
"""
from __future__ import annotations

import re

ABBREVIATIONS = frozenset("""
    al approx ca cf dr e.g eg eq eqs et fig figs i.e ie incl inc jr ltd mr mrs ms prof ref refs resp
    sp spp ssp st subsp syn var vs viz vol vols cv co dept univ jan feb mar apr jun jul aug sep sept
    oct nov dec
""".split())
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "nr", "p", "pp", "tab", "sec", "ch"})  # only before a digit

_CANDIDATE = re.compile(r"""[.?!]+["'\u201d\u2019)\]]*\s+""")
_DOTTED = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?$")
_MIXED_CASE = re.compile(r"^[a-z]+[A-Z0-9]")
_OPENERS = "([\"'\u201c\u2018"


def _plausible_start(rest: str) -> bool:
    first = rest[:1]
    if not first:
        return False
    if first.isupper() or first.isdigit() or first in _OPENERS or "\u03b1" <= first.lower() <= "\u03c9":
        return True
    return bool(_MIXED_CASE.match(rest))


def _word_before(text: str, end: int) -> str:
    """The token that ends at `end` (the period's index), leading brackets and quotes stripped."""
    start = text.rfind(" ", 0, end) + 1
    return text[start:end].lstrip(_OPENERS)


def _is_abbreviation(text: str, dot: int, rest: str) -> bool:
    word = _word_before(text, dot)
    low = word.lower()
    if low in ABBREVIATIONS or _DOTTED.match(word):
        return True
    return low in NUMBER_ABBREVIATIONS and rest[:1].isdigit()


def _depth(segment: str) -> int:
    return segment.count("(") - segment.count(")") + segment.count("[") - segment.count("]")


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences (whitespace collapsed, none empty)."""
    text = " ".join(text.split())
    out, start = [], 0
    for m in _CANDIDATE.finditer(text):
        rest = text[m.end():]
        if not _plausible_start(rest):
            continue
        if text[m.start()] == "." and _is_abbreviation(text, m.start(), rest):
            continue
        if _depth(text[start:m.end()]) > 0:  # closers after the period count
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out
