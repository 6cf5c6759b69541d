"""Contrastive retrieval training behind `biomamba retrieval train` (its command line and usage: train/retrieval_train_cli.py)."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from biomamba import flags
from biomamba.checkpoints import CheckpointError
from biomamba.config import SCAN_BACKENDS, SSM_LAYERS, preset_problem
from biomamba.data.documents import plain_abstract
from biomamba.data.pairs import INSTRUCTIONS, PAIR_KINDS, pubmed_pairs
from biomamba.data.sampling import HashSample
from biomamba.data.retrieval_tasks import beir_task, pubmed_task
from biomamba.encoding import PASSAGE_TEMPLATE, QUERY_TEMPLATE, format_passage, format_query, special_ids, tokenize_batch
from biomamba.metrics.retrieval import evaluate_run
from biomamba.resolve import ModelSpecError, find_tokenizer_dir, load_tokenizer, model_dir_of
from biomamba.retrievers import BM25, Encoder, RetrievalError, dense_run
from biomamba.train.config import (ConfigError, LoggingConfig, OptimConfig, RuntimeConfig, TrainConfig, at_least,
                                   check_loop, choice, load_config)
from biomamba.train.loop import Evaluation, NonFiniteLoss, Objective
from biomamba.train.run import RunSpec, execute, in_session
from biomamba.train.retrieval_train_cli import add_arguments  # noqa: F401  (the command's arguments, re-exported)


@dataclass
class RetrievalModelConfig:
    init_from: str | None = None  # a pretrained Mamba checkpoint dir (e.g. RUN_DIR/model)
    preset: str | None = None  # only without init_from: a randomly initialised preset (tests, debugging)
    ssm_layer: str = choice("Mamba1", SSM_LAYERS)  # the preset's block type
    pooling: str = choice("last", ("last", "mean"))  # last: the appended EOS
    embedding_dim: int | None = at_least(None, 1)  # a linear projection to this size; None keeps d_model
    scan_backend: str = choice("auto", SCAN_BACKENDS)
    tokenizer: str | None = None  # default: model.init_from's tokenizer, else data.dir/tokenizer


@dataclass
class RetrievalDataConfig:
    dir: str | None = "demo_out/data"  # a prepared dir: pairs from its train split, validation from val
    kinds: list[str] = field(default_factory=lambda: ["title-abstract", "conclusion-rest"])
    beir: list[str] = field(default_factory=list)  # BEIR dirs: training pairs from qrels/train.tsv
    eval_beir: list[str] = field(default_factory=list)  # BEIR dirs validated on qrels/test.tsv
    bioasq: str | None = None  # BioASQ JSON: question -> document pairs over DIR's documents
    max_pairs: int | None = at_least(None, 1)  # per source, a fixed hash subset; None keeps all
    query_max_length: int = at_least(64, 2)
    passage_max_length: int = at_least(256, 2)
    eval_docs: int = at_least(400, 1)  # validation documents per held-out task (val split)


@dataclass
class LossConfig:
    temperature: float = 0.05
    hard_negatives: int = at_least(0, 0)  # BM25-mined negatives per query (0: in-batch negatives only)
    mine_depth: int = at_least(20, 1)  # negatives are drawn from the BM25 top mine_depth, positives excluded
    query_template: str = QUERY_TEMPLATE
    passage_template: str = PASSAGE_TEMPLATE


@dataclass
class RetrievalRunConfig:
    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10, weight_decay=0.01))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16, eval_every=100, save_every=100))
    run: RuntimeConfig = field(default_factory=RuntimeConfig)
    # no group: the run joins the W&B group of its model.init_from (biomamba.tracking)
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(tags=["retrieval"]))
    seed: int = 0


def check_config(cfg: RetrievalRunConfig, problems: list):
    m, d, loss, t, o = cfg.model, cfg.data, cfg.loss, cfg.train, cfg.optim
    if not m.init_from and not m.preset:
        problems.append("model.init_from (a pretrained checkpoint dir) is required "
                        "(or model.preset for a randomly initialised model)")
    problem = m.preset and preset_problem(m.preset, m.ssm_layer, "model.preset", "model.ssm_layer")
    if problem and m.ssm_layer in SSM_LAYERS:
        problems.append(problem)
    unknown = [k for k in d.kinds if k not in ("title-abstract", "conclusion-rest")]
    if unknown:
        problems.append(f"data.kinds: unknown {unknown}; choose from title-abstract, conclusion-rest")
    if (d.kinds or d.bioasq) and not d.dir:
        problems.append("data.kinds / data.bioasq need data.dir (a prepared data directory)")
    if not (d.kinds and d.dir) and not d.beir and not d.bioasq:
        problems.append("no training pairs: set data.dir with data.kinds, data.beir or data.bioasq")
    if loss.temperature <= 0:
        problems.append(f"loss.temperature must be > 0, got {loss.temperature}")
    if loss.hard_negatives > loss.mine_depth:
        problems.append(f"need loss.hard_negatives <= loss.mine_depth, got {loss.hard_negatives}, {loss.mine_depth}")
    if t.batch_size < 2:
        problems.append(f"train.batch_size must be >= 2 (in-batch negatives), got {t.batch_size}")
    check_loop(t, o, problems)
    if "{q}" not in loss.query_template or "{text}" not in loss.passage_template:
        problems.append("loss.query_template needs {q} (and may use {instruction}); loss.passage_template needs {text}")


# ----------------------------------------------------------------------------- pair sources

@dataclass
class PairSource:
    """Training pairs over one passage list: pair i = (queries[query_of[i]], passages[positive[i]])."""

    name: str
    instruction: str
    queries: list
    passages: list  # [{"title", "text"}]
    query_of: np.ndarray
    positive: np.ndarray
    positives_of: list = dataclasses.field(default_factory=list)  # per query: set of passage indices
    bm25: object = None

    def __post_init__(self):
        if not self.positives_of:
            self.positives_of = [set() for _ in self.queries]
            for q, p in zip(self.query_of, self.positive):
                self.positives_of[q].add(int(p))

    def __len__(self):
        return len(self.query_of)


def pubmed_source(documents, kind, max_pairs=None) -> PairSource:
    """Pairs of one kind streamed from document rows; data.max_pairs keeps a fixed hash subset."""
    sample = HashSample(max_pairs)
    for pair in pubmed_pairs(documents, kind):
        sample.add(pair[0], pair)
    pairs = sample.items()
    n = len(pairs)
    return PairSource(kind, INSTRUCTIONS[kind], [q for _, q, _ in pairs], [p for _, _, p in pairs],
                      np.arange(n), np.arange(n))


def qrels_source(name, instruction, queries: dict, corpus: dict, qrels: dict, max_pairs=None) -> PairSource:
    """Pairs from judged (grade > 0) query-document pairs; unknown ids raise RetrievalError."""
    bad = sorted({q for q in qrels if q not in queries} | {d for docs in qrels.values() for d in docs if d not in corpus})
    if bad:
        raise RetrievalError(f"{name}: qrels name ids missing from its queries/corpus, e.g. {bad[:3]}")
    qids = sorted(q for q, docs in qrels.items() if any(g > 0 for g in docs.values()))
    dids = sorted({d for q in qids for d, g in qrels[q].items() if g > 0})
    doc_index = {d: i for i, d in enumerate(dids)}
    sample = HashSample(max_pairs)
    for qi, q in enumerate(qids):
        for d, g in sorted(qrels[q].items()):
            if g > 0:
                sample.add(f"{q}\t{d}", (qi, doc_index[d]))
    pairs = sample.items()
    if not pairs:
        raise RetrievalError(f"{name}: no judged pair with grade > 0")
    return PairSource(name, instruction, [queries[q] for q in qids], [corpus[d] for d in dids],
                      np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))


def beir_source(directory, max_pairs=None) -> PairSource:
    from biomamba.data.beir import load_beir
    from biomamba.data.errors import DataError

    directory = Path(directory)
    if not (directory / "qrels" / "train.tsv").is_file():
        raise RetrievalError(f"{directory}: missing qrels/train.tsv (data.beir needs training qrels)")
    try:
        data = load_beir(directory)
    except DataError as error:
        raise RetrievalError(str(error)) from None
    instruction = INSTRUCTIONS.get(directory.name.lower(), INSTRUCTIONS["bioasq"])
    return qrels_source(f"beir:{directory.name}", instruction, data.queries, data.corpus, data.qrels["train"], max_pairs)


def bioasq_source(path, documents, max_pairs=None) -> PairSource:
    """BioASQ question -> document pairs; of the (streamed) documents only those questions name are kept."""
    from biomamba.data.bioasq import load_bioasq, question_pmids

    questions = load_bioasq(path)
    wanted = question_pmids(questions)
    corpus = {d["pmid"]: {"title": d["title"], "text": plain_abstract(d)} for d in documents if d["pmid"] in wanted}
    queries = {q.id: q.body for q in questions}
    qrels = {q.id: {d: 1 for d in q.documents if d in corpus} for q in questions}
    return qrels_source("bioasq", INSTRUCTIONS["bioasq"], queries, corpus,
                        {q: docs for q, docs in qrels.items() if docs}, max_pairs)


def build_sources(cfg) -> list[PairSource]:
    from biomamba.data.documents import read_documents
    from biomamba.data.errors import DataError

    d, sources = cfg.data, []

    def documents(split=None):  # streamed, once per source
        try:
            return read_documents(d.dir, split=split)
        except DataError as error:
            raise RetrievalError(f"data.dir={error}") from None

    sources += [pubmed_source(documents("train"), kind, d.max_pairs) for kind in d.kinds] if d.dir else []
    sources += [beir_source(b, d.max_pairs) for b in d.beir]
    if d.bioasq:
        sources.append(bioasq_source(d.bioasq, documents(), d.max_pairs))
    too_small = [f"{s.name} ({len(s)} pairs)" for s in sources if len(s) < cfg.train.batch_size]
    if too_small:
        raise RetrievalError(f"sources smaller than train.batch_size={cfg.train.batch_size}: {', '.join(too_small)}")
    return sources


# ----------------------------------------------------------------------------- batches and loss

class ContrastiveBatches:
    """Micro-batches that are a pure function of the step (exact resume): one source per step."""

    def __init__(self, sources, tokenizer, cfg):
        self.sources, self.tokenizer, self.cfg = sources, tokenizer, cfg
        self.eos_id, self.pad_id = special_ids(tokenizer)
        if cfg.loss.hard_negatives:
            for source in sources:
                source.bm25 = BM25([" ".join(filter(None, (p["title"], p["text"]))) for p in source.passages])

    def for_step(self, step: int) -> list[dict]:
        source = self.sources[(step - 1) % len(self.sources)]
        t = self.cfg.train
        return [self.make(source, np.random.default_rng([self.cfg.seed, step, micro]))
                for micro in range(t.grad_accum)]

    def make(self, source: PairSource, rng) -> dict:
        pairs = rng.choice(len(source), size=self.cfg.train.batch_size, replace=False)
        queries = source.query_of[pairs]
        passages = list(source.positive[pairs])
        passages += self.hard_negatives(source, queries, rng)
        return self.tokenized(source, queries, passages)

    def hard_negatives(self, source, queries, rng) -> list[int]:
        h, depth = self.cfg.loss.hard_negatives, self.cfg.loss.mine_depth
        if not h or source.bm25 is None:  # validation sources: in-batch negatives only
            return []
        _, found = source.bm25.search([source.queries[q] for q in queries], depth + len(max(
            (source.positives_of[q] for q in queries), key=len)))
        out = []
        for q, row in zip(queries, found):
            candidates = [int(j) for j in row if int(j) not in source.positives_of[q]][:depth]
            if len(candidates) < h:  # a tiny corpus: fill with random non-positives
                others = [j for j in range(len(source.passages)) if j not in source.positives_of[q] and j not in candidates]
                candidates += list(rng.choice(others, size=min(h - len(candidates), len(others)), replace=False))
            out += [int(j) for j in rng.choice(candidates, size=h, replace=False)]
        return out

    def tokenized(self, source, queries, passages) -> dict:
        loss_cfg, d = self.cfg.loss, self.cfg.data
        q_text = [format_query(source.queries[q], source.instruction, loss_cfg.query_template) for q in queries]
        p_text = [format_passage(source.passages[p]["title"], source.passages[p]["text"], loss_cfg.passage_template)
                  for p in passages]
        q_ids, q_mask = tokenize_batch(self.tokenizer, q_text, d.query_max_length, self.eos_id, self.pad_id)
        p_ids, p_mask = tokenize_batch(self.tokenizer, p_text, d.passage_max_length, self.eos_id, self.pad_id)
        # False negatives: passage j is a positive of query i but is not its target (column i).
        exclude = torch.tensor([[p in source.positives_of[q] for p in passages] for q in queries])
        exclude.fill_diagonal_(False)
        return {"q_ids": q_ids, "q_mask": q_mask, "p_ids": p_ids, "p_mask": p_mask, "exclude": exclude}


def info_nce(q: torch.Tensor, p: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None):
    """q (B, d), p (B*(1+H), d), both L2-normalised; the target of row i is column i."""
    logits = q.float() @ p.float().T / temperature  # (B, B*(1+H))
    if exclude is not None:
        logits = logits.masked_fill(exclude.to(logits.device), float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(q), device=logits.device))


def make_loss_fn(temperature: float):
    def loss_fn(model, batch):
        device = next(model.parameters()).device
        q = model(input_ids=batch["q_ids"].to(device), attention_mask=batch["q_mask"].to(device)).embeddings
        p = model(input_ids=batch["p_ids"].to(device), attention_mask=batch["p_mask"].to(device)).embeddings
        return info_nce(q, p, temperature, batch["exclude"])
    return loss_fn


def items_in(batch) -> int:
    return int(batch["q_mask"].sum() + batch["p_mask"].sum())  # tokens encoded


# ----------------------------------------------------------------------------- validation

def make_evaluate(cfg, tokenizer, batches: ContrastiveBatches):
    """Val-split held-out tasks (and eval_beir test qrels): dense metrics + the val contrastive loss."""
    from biomamba.data.documents import read_documents

    d = cfg.data
    tasks, val_sources = [], []
    if d.dir and d.kinds:
        val_docs = list(read_documents(d.dir, split="val"))
        # Per kind, the first eval_docs val documents that make a pair: the file order puts the
        # 1976-80 file (no structured abstracts) first, so a plain prefix has no conclusion pairs.
        by_kind = {kind: [doc for doc in val_docs if PAIR_KINDS[kind](doc)][: d.eval_docs] for kind in d.kinds}
        tasks += [pubmed_task(docs, kind) for kind, docs in by_kind.items() if docs]
        val_sources = [pubmed_source(docs, kind) for kind, docs in by_kind.items()]
    tasks += [beir_task(b, "test") for b in d.eval_beir]
    loss_fn = make_loss_fn(cfg.loss.temperature)
    # The val contrastive loss: one fixed in-batch-negatives batch per val source that fills one.
    val_batches = [batches.make(s, np.random.default_rng([cfg.seed, 0, 1 << 30]))
                   for s in val_sources if len(s) >= cfg.train.batch_size]

    def evaluate(model, step) -> Evaluation:
        metrics = {}
        if val_batches:
            metrics["loss"] = float(np.mean([loss_fn(model, b).item() for b in val_batches]))
        encoder = Encoder(model, tokenizer, cfg.loss.query_template, cfg.loss.passage_template,
                          max(d.query_max_length, d.passage_max_length))
        for task in tasks:
            run, _ = dense_run(encoder, task, batch_size=cfg.train.batch_size)
            result = evaluate_run(task.qrels, run)
            metrics.update({f"{task.name}/{m}": result[m] for m in ("nDCG@10", "Recall@1", "Recall@10")})
        return Evaluation(metrics)

    return evaluate


# ----------------------------------------------------------------------------- the run

def build_model(cfg, vocab_size: int, eos_id: int):
    from biomamba import BioMambaConfig
    from biomamba.modeling import BioMambaForEmbedding

    m = cfg.model
    torch.manual_seed(cfg.seed)
    if m.init_from:
        model = BioMambaForEmbedding.from_pretrained(model_dir_of(m.init_from), pooling=m.pooling, embedding_dim=m.embedding_dim)
        if model.config.vocab_size < vocab_size:
            raise RetrievalError(f"model.init_from={m.init_from}: vocabulary {model.config.vocab_size} < "
                                 f"the tokenizer's {vocab_size}")
    else:
        config = BioMambaConfig.from_preset(m.preset, ssm_layer=m.ssm_layer, vocab_size=vocab_size, eos_token_id=eos_id,
                                            bos_token_id=eos_id, pad_token_id=eos_id, pooling=m.pooling,
                                            embedding_dim=m.embedding_dim)
        model = BioMambaForEmbedding(config)
    model.config.scan_backend = m.scan_backend
    return model.train()


def tokenizer_dir(cfg) -> Path:
    """model.tokenizer, else model.init_from's tokenizer, else data.dir's tokenizer/."""
    try:
        model = model_dir_of(cfg.model.init_from) if cfg.model.init_from else None
        return find_tokenizer_dir(model or cfg.data.dir or ".", cfg.model.tokenizer,
                                  [Path(cfg.data.dir) / "tokenizer"] if cfg.data.dir else [],
                                  hint="set model.tokenizer=DIR, or use a model.init_from dir holding one")
    except ModelSpecError as error:
        raise RetrievalError(str(error)) from None


def train_retrieval(cfg, run_dir: Path) -> dict:
    return in_session(cfg.run.device, "retrieval train", lambda device: _train(cfg, Path(run_dir), device),
                      out=run_dir)


def _train(cfg, run_dir: Path, device) -> dict:
    tok_dir = tokenizer_dir(cfg)
    tokenizer = load_tokenizer(tok_dir)
    eos_id, _ = special_ids(tokenizer)
    sources = build_sources(cfg)
    model = build_model(cfg, len(tokenizer), eos_id).to(device)
    batches = ContrastiveBatches(sources, tokenizer, cfg)
    objective = Objective(batches_for=batches.for_step, loss_fn=make_loss_fn(cfg.loss.temperature),
                          items_in=items_in, evaluate=make_evaluate(cfg, tokenizer, batches), prefix="retrieval")
    init = cfg.model.init_from or f"random {cfg.model.preset} (no pretrained checkpoint)"
    facts = {"tokenizer": str(tok_dir), "init": init, "sources": {s.name: len(s) for s in sources}}
    describe = f"retrieval from {init}; pairs " + ", ".join(f"{k} {v:,}" for k, v in facts["sources"].items())
    return execute(RunSpec(cfg, run_dir, model, objective, device, tokenizer, facts, describe,
                           job_type="retrieval-train", source_model=cfg.model.init_from))


def run(args) -> int:
    try:
        cfg = load_config(args.config, [*args.overrides, *flags.overrides(args)], schema=RetrievalRunConfig,
                          check=check_config)
        train_retrieval(cfg, Path(args.out))
    except (ConfigError, NonFiniteLoss, RetrievalError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
