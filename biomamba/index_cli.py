"""`biomamba retrieval index`: embed a corpus with a retrieval model into an index of float16 shards.

  biomamba retrieval index --model runs/retrieval/model --corpus demo_out/data --out runs/index

The corpus is a prepared data dir (every document: title + plain abstract) or a BEIR dir /
corpus.jsonl. `biomamba retrieval search --index runs/index` searches it.
"""
import sys
import time
from pathlib import Path

from biomamba.checkpoints import CheckpointError
from biomamba.data.errors import DataError
from biomamba.data.retrieval_tasks import load_corpus
from biomamba.resolve import ModelSpecError
from biomamba.retrieval import RetrievalError, load_encoder, write_index


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="retrieval model dir")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: the model dir)")
    parser.add_argument("--corpus", required=True, help="a prepared data dir or a BEIR dir / corpus.jsonl")
    parser.add_argument("--out", required=True, help="index directory")
    parser.add_argument("--batch-size", type=int, default=32)


def run(args) -> int:
    try:
        encoder = load_encoder(args.model, args.tokenizer)
        corpus = load_corpus(args.corpus)
        if not corpus:
            raise RetrievalError(f"{args.corpus}: the corpus is empty")
    except (RetrievalError, CheckpointError, DataError, ModelSpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ids = list(corpus)
    start = time.perf_counter()
    embeddings = encoder.encode_corpus([corpus[i] for i in ids], batch_size=args.batch_size,
                                       progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    write_index(args.out, ids, [corpus[i]["title"] for i in ids], embeddings,
                {"model": str(Path(args.model).resolve()), "corpus": str(args.corpus),
                 "passage_template": encoder.passage_template})
    print(f"indexed {len(ids):,} documents in {seconds:.1f} s ({len(ids) / max(seconds, 1e-9):.1f} docs/s) "
          f"-> {args.out}")
    return 0
