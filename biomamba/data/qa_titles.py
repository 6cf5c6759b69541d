"""QA tasks made from PubMed itself: "which of these 4 titles belongs to this abstract?", and its yes/no
variant "Is '<title>' the title of this abstract?" written as PubMedQA files (title_yesno_records).

    titles:PREPARED_DIR   eval-qa's task spec: items from the test split, few-shot examples from val

Built from a `biomamba prepare` directory so that the demo and the tests have a QA number that is
not chance without any downloaded benchmark. Everything is chosen by hash (biomamba.data.splits.
unit_hash), so the task is the same on every machine and for every model:
  items        the `limit` documents of the split (title and abstract both present) whose
               PMID hashes lowest; they are also the distractor pool
  distractors  for each item, the 3 other pool documents whose hash of (item PMID, other PMID) is lowest:
               titles from the same split, never the item's own
  gold         the true title's position, from the hash of the item's PMID (uniform over A-D)
The context is the abstract (its sections as one text); eval-qa's prompt is "Abstract: ...\nTitle:" with
the 4 titles as the continuations scored (eval/qa_prompts.py). A test split PMID is
never in the pretraining shards (prepare's hash split), so a model cannot have seen the pairing.
"""
from __future__ import annotations

from biomamba.data.qa_formats import QAItem
from biomamba.data.sampling import HashSample
from biomamba.data.splits import unit_hash

QUESTION = "Which title belongs to this abstract?"
OPTIONS = 4


def sample_documents(documents, limit: int) -> list:
    """The `limit` documents with a title and an abstract whose PMID hashes lowest, by PMID hash."""
    sample = HashSample(limit, seed=0)
    for doc in documents:
        if doc.get("title") and doc.get("abstract"):
            sample.add(str(doc["pmid"]), {"pmid": str(doc["pmid"]), "title": doc["title"],
                                          "abstract": doc["abstract"]})
    return sorted(sample.items(), key=lambda d: unit_hash(f"0:{d['pmid']}"))


def title_items(documents, limit: int) -> list:
    """QAItems: an abstract as context, the true title among 3 hashed distractors from the same pool."""
    pool = sample_documents(documents, limit)
    if len(pool) < OPTIONS:
        raise ValueError(f"the title task needs at least {OPTIONS} documents with a title and an abstract; "
                         f"found {len(pool)}")
    items = []
    for doc in pool:
        others = sorted((d for d in pool if d["pmid"] != doc["pmid"]),
                        key=lambda d: unit_hash(f"{doc['pmid']}:{d['pmid']}"))[:OPTIONS - 1]
        gold = int(unit_hash(f"gold:{doc['pmid']}") * OPTIONS)
        titles = [d["title"] for d in others]
        titles.insert(gold, doc["title"])
        items.append(QAItem(doc["pmid"], QUESTION, tuple(titles), gold, (doc["abstract"],)))
    return items


def yes_no_question(title: str) -> str:
    return f"Is '{title}' the title of this abstract?"


def title_yesno_records(documents, limit: int) -> dict:
    """PubMedQA's ori_pqal.json layout {pmid: {QUESTION, CONTEXTS, LABELS, final_decision}} for the
    `limit` documents of a split whose PMID hashes lowest (sample_documents). The question names the
    document's own title for the half of them whose hash of ("yesno", PMID) is lowest (answer yes: chance
    is 0.5), else the title of the pool document whose hash of (PMID, other PMID) is lowest (answer no)."""
    pool = sample_documents(documents, limit)
    if len(pool) < 2:
        raise ValueError(f"the yes/no title task needs at least 2 documents with a title and an abstract; "
                         f"found {len(pool)}")
    by_hash = sorted(pool, key=lambda d: unit_hash(f"yesno:{d['pmid']}"))
    yes = {d["pmid"] for d in by_hash[:len(pool) // 2]}
    records = {}
    for doc in pool:
        own = doc["pmid"] in yes
        other = min((d for d in pool if d["pmid"] != doc["pmid"]),
                    key=lambda d: unit_hash(f"{doc['pmid']}:{d['pmid']}"))
        records[doc["pmid"]] = {"QUESTION": yes_no_question(doc["title"] if own else other["title"]),
                                "CONTEXTS": [doc["abstract"]], "LABELS": ["ABSTRACT"],
                                "final_decision": "yes" if own else "no"}
    return records
