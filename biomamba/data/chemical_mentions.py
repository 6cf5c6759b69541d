"""Chemical mentions by dictionary: a citation's ChemicalList names found in its own text, tagged BIO.

The silver chemical NER task (silver_tasks.py) and the dictionary baseline (bench/ner_dictionary_baseline.py)
tag text with the same rules, so the baseline differs from the gold only in which names it knows:

  tokens       `tokenize`: runs of word characters (`\\w+`: letters, digits, underscore) and single other
               non-space characters: "2,4-Dinitrophenol" -> 2 , 4 - Dinitrophenol. A name is tokenised
               the same way, so a token never holds a tab, a newline or a space.
  case         case-insensitive (str.lower on both sides): MeSH writes "Adenosine Triphosphate", abstracts
               write "adenosine triphosphate". On the 1976-80 file an exact-case rule keeps 3,992 of the
               32,477 whole-token mentions (12%).
  boundaries   whole tokens only: "insulin" is found in "insulin-like" (insulin, -, like) but not in
               "proinsulin" or "insulins". A plain substring search would find 35,031 (2,554 more).
  overlaps     leftmost-longest, no overlapping or nested entities: at each token the longest name that
               starts there wins, and the scan resumes after it ("Thyrotropin-Releasing Hormone" is one
               entity, not also "Thyrotropin").
  skipped      names under MIN_NAME_CHARS characters, and GENERIC_NAMES: MeSH group headings that say
               which class of substance a paper is about ("Proteins", "Amino Acids") rather than name one.
(Figures: `python bench/chemical_rules.py --data DIR` on the embedded data.) Tags are IOB2: B-Chemical on an entity's first token, I-Chemical on the rest, O elsewhere.
"""
from __future__ import annotations

import re
from typing import Iterable

ENTITY = "Chemical"
TAGS = (f"B-{ENTITY}", f"I-{ENTITY}", "O")
MIN_NAME_CHARS = 3
GENERIC_NAMES = ("Amino Acids", "Antibodies", "Antigens", "Enzymes", "Fatty Acids", "Hormones", "Lipids",
                 "Peptides", "Proteins")

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def name_key(tokens: Iterable[str]) -> tuple[str, ...]:
    """What two spellings of a name must share to match: their lowercased tokens."""
    return tuple(t.lower() for t in tokens)


_GENERIC_KEYS = frozenset(name_key(tokenize(n)) for n in GENERIC_NAMES)


def skip_reason(name: str) -> str | None:
    """Why a name is never tagged ("short", "generic"), or None."""
    if len(name.strip()) < MIN_NAME_CHARS:
        return "short"
    if name_key(tokenize(name)) in _GENERIC_KEYS:
        return "generic"
    return None


class Dictionary:
    """Names to find, indexed by their first token for a left-to-right scan."""

    def __init__(self, keys: Iterable[tuple[str, ...]]):
        self.by_first: dict[str, list[tuple[str, ...]]] = {}
        for key in set(k for k in keys if k):
            self.by_first.setdefault(key[0], []).append(key)
        for found in self.by_first.values():
            found.sort(key=lambda k: (-len(k), k))  # longest first: the scan takes the first that fits

    @classmethod
    def of_names(cls, names: Iterable[str]) -> "Dictionary":
        """A dictionary of names as written (the skip rules are the caller's: see `kept_names`)."""
        return cls(name_key(tokenize(n)) for n in names)

    def candidates(self, lowered: list[str]) -> list[tuple[int, int]]:
        """Every (start, end) token span that equals a name, overlapping ones included."""
        spans = []
        for i, token in enumerate(lowered):
            for key in self.by_first.get(token, ()):
                if tuple(lowered[i:i + len(key)]) == key:
                    spans.append((i, i + len(key)))
        return spans


def kept_names(names: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The names a matcher uses, and the ones each skip rule removed."""
    kept, skipped = [], {"short": [], "generic": []}
    for name in names:
        reason = skip_reason(name)
        (kept if reason is None else skipped[reason]).append(name)
    return kept, skipped


def leftmost_longest(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Non-overlapping spans: scanning left to right, the longest span at each start wins."""
    chosen, end = [], 0
    for start, stop in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start >= end:
            chosen.append((start, stop))
            end = stop
    return chosen


def bio_tags(length: int, spans: list[tuple[int, int]]) -> list[str]:
    tags = ["O"] * length
    for start, stop in spans:
        tags[start] = f"B-{ENTITY}"
        for i in range(start + 1, stop):
            tags[i] = f"I-{ENTITY}"
    return tags


def tag_tokens(tokens: list[str], dictionary: Dictionary) -> tuple[list[str], int]:
    """IOB2 tags of one sentence, and how many candidate matches the overlap rule removed."""
    spans = dictionary.candidates(name_key(tokens))
    chosen = leftmost_longest(spans)
    return bio_tags(len(tokens), chosen), len(spans) - len(chosen)


def entity_spans(tags: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each entity of well-formed IOB2 tags (as tag_tokens writes them)."""
    spans = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([i, i + 1])
        elif tag.startswith("I-") and spans and spans[-1][1] == i:
            spans[-1][1] = i + 1
    return [tuple(s) for s in spans]
