"""`biomamba retrieval index`: embed a corpus with a retrieval model into an index of float16 shards.

  biomamba retrieval index --model runs/retrieval/model --corpus demo_out/data --out runs/index

The corpus is a prepared data dir (every document: title + plain abstract) or a BEIR dir /
corpus.jsonl. `biomamba retrieval search --index runs/index` searches it.
"""
import itertools
import sys
import time
from pathlib import Path

from biomamba import locking


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="retrieval model dir")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: the model dir)")
    parser.add_argument("--corpus", required=True, help="a prepared data dir or a BEIR dir / corpus.jsonl")
    parser.add_argument("--out", required=True, help="index directory")
    parser.add_argument("--batch-size", type=int, default=32)


def run(args) -> int:
    # imported here, not above: `--help` must print without loading torch (biomamba/cli.py)
    from biomamba.checkpoints import CheckpointError
    from biomamba.data.errors import DataError
    from biomamba.data.retrieval_tasks import iter_corpus
    from biomamba.resolve import ModelSpecError
    from biomamba.retrievers import RetrievalError, load_encoder

    try:
        with locking.hold(args.out) as lock:  # before the model loads: a second writer stops at once
            encoder = load_encoder(args.model, args.tokenizer)
            count, seconds = build_index(encoder, iter_corpus(args.corpus), args, lock)
        if count == 0:
            raise RetrievalError(f"{args.corpus}: the corpus is empty")
    except (RetrievalError, CheckpointError, DataError, ModelSpecError, locking.DirectoryInUse) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"indexed {count:,} documents in {seconds:.1f} s ({count / max(seconds, 1e-9):.1f} docs/s) -> {args.out}")
    return 0


def build_index(encoder, corpus, args, lock=None) -> tuple[int, float]:
    """Encode the (streamed) corpus part by part into the index: memory is one part, not the corpus.
    `lock`: the caller's lock on args.out (biomamba.locking), kept across the swap to the new index."""
    from tqdm.auto import tqdm

    from biomamba.retrievers import ENCODE_PART, IndexWriter

    meta = {"model": str(Path(args.model).resolve()), "corpus": str(args.corpus),
            "passage_template": encoder.passage_template}
    count, start = 0, time.perf_counter()
    with IndexWriter(args.out, meta, lock=lock) as writer, \
            tqdm(desc="index", unit="doc", disable=None, file=sys.stderr) as bar:
        for part in iter(lambda: list(itertools.islice(corpus, ENCODE_PART)), []):
            embeddings = encoder.encode_corpus([doc for _, doc in part], batch_size=args.batch_size)
            writer.add([i for i, _ in part], [doc["title"] for _, doc in part], embeddings)
            count += len(part)
            bar.update(len(part))
    return count, time.perf_counter() - start
