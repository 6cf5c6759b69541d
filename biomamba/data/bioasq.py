"""BioASQ task B (question answering) JSON of any year, normalised to one shape.

Input: {"questions": [{"id", "body", "type", "documents", "snippets", "ideal_answer", "exact_answer"}]}
(or a bare list of questions). Quirks across the years (2013-2025) that are normalised:
  documents   "http://www.ncbi.nlm.nih.gov/pubmed/123", "https://pubmed.ncbi.nlm.nih.gov/123/",
              or a bare "123"                                     -> "123"
  ideal_answer a string or a list of strings                       -> [str]
  exact_answer yesno: "yes" / "Yes." / ["yes"]                     -> "yes" | "no"
               factoid: ["syn", "syn"] (one answer's synonyms) or [["syn"], ["other answer"]]
                                                                   -> [[str]] answers, each its synonyms
               list: [["a", "a syn"], ["b"]] or a flat ["a", "b"] (one answer each) -> [[str]]
               summary / missing                                   -> None
  type        any case                                             -> lower case
  snippets    {"document", "text", "beginSection", "endSection", "offsetInBeginSection",
              "offsetInEndSection"} with the document as a URL      -> Snippet(pmid, text, ...)
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from biomamba.data.errors import DataError

_PMID_IN_URL = re.compile(r"(\d+)/?\s*$")


@dataclasses.dataclass
class Snippet:
    pmid: str
    text: str
    begin_section: str = ""
    end_section: str = ""
    offset_begin: int | None = None
    offset_end: int | None = None


@dataclasses.dataclass
class BioASQQuestion:
    id: str
    body: str
    type: str  # "yesno" | "factoid" | "list" | "summary"
    documents: list  # [pmid]
    snippets: list  # [Snippet]
    ideal_answer: list  # [str]
    exact_answer: object  # "yes"/"no" | [[str]] | None


def pmid_of(document: str) -> str:
    """The PMID in a BioASQ document reference (URL of any PubMed host, or the bare number)."""
    m = _PMID_IN_URL.search(str(document).strip())
    if m is None:
        raise ValueError(f"no PMID in document reference {document!r}")
    return m.group(1)


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    return [s for v in value for s in _strings(v)]


def _yesno(value) -> str | None:
    text = " ".join(_strings(value)).strip().lower().rstrip(".")
    return text if text in ("yes", "no") else None


def _answers(value, flat_is_synonyms: bool) -> list[list[str]]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [[value.strip()]]
    if all(isinstance(v, str) for v in value):
        flat = [v.strip() for v in value if v.strip()]
        return [flat] if flat_is_synonyms and flat else [[v] for v in flat]
    return [a for a in (_strings(v) for v in value) if a]


def normalise_exact(qtype: str, value):
    if qtype == "yesno":
        return _yesno(value)
    if qtype == "factoid":
        return _answers(value, flat_is_synonyms=True)
    if qtype == "list":
        return _answers(value, flat_is_synonyms=False)
    return None


def _snippet(s: dict) -> Snippet:
    return Snippet(pmid=pmid_of(s["document"]), text=(s.get("text") or "").strip(),
                   begin_section=s.get("beginSection", ""), end_section=s.get("endSection", ""),
                   offset_begin=s.get("offsetInBeginSection"), offset_end=s.get("offsetInEndSection"))


def parse_question(q: dict) -> BioASQQuestion:
    qtype = str(q.get("type", "summary")).strip().lower()
    return BioASQQuestion(
        id=str(q.get("id", "")), body=(q.get("body") or "").strip(), type=qtype,
        documents=list(dict.fromkeys(pmid_of(d) for d in q.get("documents") or [])),
        snippets=[_snippet(s) for s in q.get("snippets") or []],
        ideal_answer=_strings(q.get("ideal_answer")),
        exact_answer=normalise_exact(qtype, q.get("exact_answer")),
    )


def load_bioasq(path) -> list[BioASQQuestion]:
    """Every question of a BioASQ task B JSON file; DataError naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        questions = data["questions"] if isinstance(data, dict) else data
        return [parse_question(q) for q in questions]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(path, f"not a BioASQ task B JSON file ({type(err).__name__}: {err})") from None


def question_pmids(questions) -> set[str]:
    """PMIDs a set of questions points at (documents and snippets): keep them out of pretraining."""
    return {p for q in questions for p in [*q.documents, *(s.pmid for s in q.snippets)]}
