"""Retrieval metrics as trec_eval computes them (pytrec_eval), and reciprocal rank fusion.

nDCG@10 = ndcg_cut_10, Recall@k = recall_k, MRR@10 = recip_rank over each query's top 10. trec_eval
ranks a run by score descending and breaks score ties by document id descending (string order);
MRR@10 truncates each run to its first 10 documents in that same order before recip_rank. A query
with judgments but no retrieved documents scores 0 (trec_eval itself would skip it); queries without
a positive judgment are left out.

Fusion of a dense and a lexical run:
  reciprocal_rank_fusion   score(d) = sum_s 1 / (RRF_K + rank_s(d)) over each run's top `depth`; it
                           weighs both sides equally whatever each is worth, so where one side is
                           much better it lands between them
  convex_fusion            score(d) = w * mm(dense)(d) + (1 - w) * mm(lexical)(d), mm = min-max scaling
                           of a query's top `depth` scores to [0, 1] (0 for a document a run did not
                           return); w = 1 gives the dense ranking, w = 0 the lexical one
  choose_fusion_weight     the w of FUSION_WEIGHTS with the best mean nDCG@10 on validation queries;
                           between equal scores, the w nearest the better single side (no evidence
                           that mixing helps, so none is mixed in)
"""
from __future__ import annotations

import numpy as np

from biomamba.retrievers import RetrievalError

METRICS = {"nDCG@10": "ndcg_cut_10", "Recall@1": "recall_1", "Recall@10": "recall_10", "Recall@100": "recall_100"}
MEASURES = {"ndcg_cut.10", "recall.1,10,100", "recip_rank"}
DEPTH = 100  # documents retrieved per query
RRF_K = 60
FUSION_WEIGHTS = tuple(i / 20 for i in range(21))  # the dense weight w: 0, 0.05, ..., 1
FUSION_METRIC = "nDCG@10"
# A mix must beat the better single side on val by more than this to be chosen: a smaller val gain
# is within what another query sample would undo (on held-out PubMed a val gain of 0.0001-0.0013
# turned into a test loss of 0.0002-0.0022 against BM25 alone).
FUSION_MARGIN = 0.005


def trec_order(scores: dict) -> list[tuple[str, float]]:
    """A query's run {doc: score} in trec_eval's order: score descending, ties by doc id descending."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: dict, depth: int) -> dict:
    return {qid: dict(trec_order(docs)[:depth]) for qid, docs in run.items()}


def evaluate_run(qrels: dict, run: dict) -> dict:
    """Mean nDCG@10, Recall@1/10/100, MRR@10 over the queries with a positive judgment.

    qrels {qid: {doc: int grade}}, run {qid: {doc: float score}}. Returns the means plus "queries"
    and "per_query" {qid: {metric: value}}. Raises RetrievalError on run queries absent from qrels.
    """
    import pytrec_eval

    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()
             if any(g > 0 for g in docs.values())}
    if not qrels:
        raise RetrievalError("the qrels hold no query with a relevant (grade > 0) document")
    unknown = sorted(set(run) - set(qrels))
    if unknown:
        raise RetrievalError(f"{len(unknown)} run queries are not in the qrels, e.g. {unknown[:3]}")
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if docs}
    full = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate_run(run, 10))
    per_query = {}
    for qid in qrels:
        row = {name: full.get(qid, {}).get(key, 0.0) for name, key in METRICS.items()}
        row["MRR@10"] = top10.get(qid, {}).get("recip_rank", 0.0)
        per_query[qid] = row
    names = [*METRICS, "MRR@10"]
    means = {name: float(np.mean([row[name] for row in per_query.values()])) for name in names}
    return {**means, "queries": len(per_query), "per_query": per_query}


def reciprocal_rank_fusion(runs: list[dict], k: int = RRF_K, depth: int = DEPTH) -> dict:
    """Fuse runs by RRF: each document scores sum over runs of 1 / (k + its 1-based rank)."""
    fused: dict = {}
    for run in runs:
        for qid, docs in run.items():
            target = fused.setdefault(qid, {})
            for rank, (doc, _) in enumerate(trec_order(docs)[:depth], start=1):
                target[doc] = target.get(doc, 0.0) + 1.0 / (k + rank)
    return truncate_run(fused, depth)


def min_max(scores: dict) -> dict:
    """A query's {doc: score} scaled to [0, 1]; all 0 when the scores are all equal (no preference)."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {doc: 0.0 for doc in scores}
    return {doc: (score - low) / (high - low) for doc, score in scores.items()}


def convex_fusion(dense: dict, lexical: dict, weight: float, depth: int = DEPTH) -> dict:
    """score(d) = weight * min_max(dense) + (1 - weight) * min_max(lexical) over each run's top `depth`.
    A run with weight 0 is left out entirely, so weight 1 (0) ranks exactly as dense (lexical) does."""
    if not 0 <= weight <= 1:
        raise RetrievalError(f"the fusion weight must be in [0, 1], got {weight}")
    fused: dict = {}
    for run, share in ((dense, weight), (lexical, 1.0 - weight)):
        if share == 0:
            continue
        for qid, docs in run.items():
            target = fused.setdefault(qid, {})
            for doc, score in min_max(dict(trec_order(docs)[:depth])).items():
                target[doc] = target.get(doc, 0.0) + share * score
    return truncate_run(fused, depth)


def choose_fusion_weight(qrels: dict, dense: dict, lexical: dict, weights=FUSION_WEIGHTS,
                         metric: str = FUSION_METRIC, margin: float = FUSION_MARGIN) -> tuple[float, dict]:
    """(the dense weight of `weights` whose convex_fusion scores best on `metric`, {weight: score}).

    Meant for validation queries. The better single side (weight 1 if dense alone scores at least as
    well as lexical alone, else weight 0) is kept unless a mix beats it by more than `margin`; among
    mixes that tie, the one nearest that side."""
    weights = sorted(set(weights) | {0.0, 1.0})
    curve = {w: evaluate_run(qrels, convex_fusion(dense, lexical, w))[metric] for w in weights}
    side = 1.0 if curve[1.0] >= curve[0.0] else 0.0
    best = max(curve.values())
    if best - curve[side] <= margin:
        return side, curve
    tied = [w for w, score in curve.items() if score >= best - 1e-12]
    return (max(tied) if side == 1.0 else min(tied)), curve
