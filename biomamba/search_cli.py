"""`biomamba retrieval search`: search an index built by `biomamba retrieval index`.

  biomamba retrieval search --index runs/index --query "statin induced myopathy" -k 10

Prints rank, score, PMID (or document id) and title per hit, or JSON lines with --json. Search is
exact (faiss when installed, else a float32 matrix product).
"""
import json
import sys

from biomamba.data.pairs import DEFAULT_INSTRUCTION


def add_arguments(parser):
    parser.add_argument("--index", required=True)
    parser.add_argument("--query", action="append", required=True, help="a query (repeatable)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--model", help="default: the model the index was built with")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--backend", default="auto", choices=["auto", "exact", "faiss"])
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args) -> int:
    # imported here, not above: `--help` must print without loading torch (biomamba/cli.py)
    from biomamba.checkpoints import CheckpointError
    from biomamba.resolve import ModelSpecError
    from biomamba.retrievers import DenseIndex, RetrievalError, load_encoder

    try:
        index = DenseIndex(args.index, backend=args.backend)
        model = args.model or index.meta.get("model")
        if not model:
            raise RetrievalError(f"{args.index}: meta.json names no model; pass --model")
        encoder = load_encoder(model)
    except (RetrievalError, CheckpointError, ModelSpecError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    queries = encoder.encode(args.query, instruction=args.instruction)
    for query, hits in zip(args.query, index.search(queries, args.k)):
        if args.json:
            print(json.dumps({"query": query, "hits": [{"id": i, "title": t, "score": s} for i, t, s in hits]}))
            continue
        print(f"query: {query}")
        for rank, (doc_id, title, score) in enumerate(hits, start=1):
            label = f"PMID {doc_id}" if doc_id.isdigit() else doc_id
            print(f"{rank:3d}  {score:.4f}  {label}  {title}")
    return 0
