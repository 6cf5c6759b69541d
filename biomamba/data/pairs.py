"""Query-passage pairs built from PubMed documents (the rows of biomamba.data.documents), for
training and evaluating retrievers, and the instruction each kind of query gets.

    title-abstract    the title -> the abstract (section texts without labels)
    conclusion-rest   the CONCLUSIONS sections of a structured abstract -> its other sections
"""
from __future__ import annotations

from biomamba.data.documents import plain_abstract


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


PAIR_KINDS = {"title-abstract": title_abstract_pair, "conclusion-rest": conclusion_rest_pair}
INSTRUCTIONS = {
    "title-abstract": "Given the title of a PubMed article, retrieve its abstract",
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
