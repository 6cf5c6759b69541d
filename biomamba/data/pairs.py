"""Query-passage pairs built from PubMed documents (the rows of biomamba.data.documents), for
training and evaluating retrievers, and the instruction each kind of query gets.

    title-abstract    the title -> the abstract (section texts without labels)
    conclusion-rest   the CONCLUSIONS sections of a structured abstract -> its other sections
    title-abstract-disjoint
                      the title -> the abstract with every word of the title taken out: no term
                      BM25 would match (lowercased, English-stemmed words) is left in the relevant
                      passage, so only a retriever that matches meaning, not words, can find it
"""
from __future__ import annotations

import functools
import re

from biomamba.data.documents import plain_abstract

WORD = re.compile(r"\w+")  # a superset of bm25s's tokens (\b\w\w+\b): one-letter words too


def title_abstract_pair(doc: dict):
    """(query, passage) = (title, abstract without section labels), or None."""
    abstract = plain_abstract(doc)
    if not doc.get("title") or not abstract:
        return None
    return doc["title"], {"title": "", "text": abstract}


def conclusion_rest_pair(doc: dict):
    """(query, passage) = (the CONCLUSIONS sections, the other sections), or None when either is empty."""
    conclusion = plain_abstract(doc, lambda c: c == "CONCLUSIONS")
    rest = plain_abstract(doc, lambda c: c != "CONCLUSIONS")
    if not conclusion or not rest:
        return None
    return conclusion, {"title": "", "text": rest}


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the stemmer BM25 uses (biomamba.retrievers.BM25)
    return Stemmer.Stemmer("english")


def word_stems(text: str) -> set:
    """The lowercased English stems of a text's words, as BM25 indexes them (stopwords kept)."""
    return set(_stemmer().stemWords([w.lower() for w in WORD.findall(text)]))


def without_words(text: str, stems: set) -> str:
    """`text` with every word whose lowercased stem is in `stems` taken out, spaces collapsed."""
    stemmer = _stemmer()
    kept = WORD.sub(lambda m: "" if stemmer.stemWord(m.group().lower()) in stems else m.group(), text)
    return " ".join(kept.split())


def title_abstract_disjoint_pair(doc: dict):
    """(query, passage) = (title, abstract without any word of the title), or None when nothing is left."""
    pair = title_abstract_pair(doc)
    if pair is None:
        return None
    title, passage = pair
    rest = without_words(passage["text"], word_stems(title))
    if not WORD.search(rest):
        return None
    return title, {"title": "", "text": rest}


PAIR_KINDS = {"title-abstract": title_abstract_pair, "conclusion-rest": conclusion_rest_pair,
              "title-abstract-disjoint": title_abstract_disjoint_pair}
DEFAULT_INSTRUCTION = "Given a query, retrieve relevant passages from PubMed"
INSTRUCTIONS = {
    "title-abstract": "Given the title of a PubMed article, retrieve its abstract",
    # the same question as title-abstract (a model trained on that kind meets a familiar query)
    "title-abstract-disjoint": "Given the title of a PubMed article, retrieve its abstract",
    "conclusion-rest": "Given the conclusion of a biomedical study, retrieve the rest of its abstract",
    "bioasq": "Given a biomedical question, retrieve PubMed abstracts that help answer it",
    "nfcorpus": "Given a question, retrieve relevant documents that best answer the question",
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "trec-covid": "Given a query on COVID-19, retrieve documents that answer the query",
    "scidocs": "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper",
}


def pubmed_pairs(documents, kind: str):
    """(pmid, query, passage) of one kind ("title-abstract" | "conclusion-rest") from document rows,
    streamed."""
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; choose from {', '.join(PAIR_KINDS)}")
    for doc in documents:
        pair = PAIR_KINDS[kind](doc)
        if pair is not None:
            yield (str(doc["pmid"]), *pair)
