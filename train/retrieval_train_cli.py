"""`biomamba retrieval train`: contrastive training of a BioMamba dense retriever (BMRetriever-style)
on the run skeleton.

  biomamba retrieval train --config configs/retrieval-tiny.yaml --out runs/retrieval \\
      model.init_from=demo_out/tiny/model data.dir=demo_out/data


Loss: InfoNCE with in-batch negatives, optionally plus BM25-mined hard negatives. For a micro-batch
of B (query, passage) pairs and H hard negatives per query, the passages are the B positives then
the B*H negatives; logits = q @ p.T / temperature, (B, B*(1+H)); the target of query i is passage i.
A passage that is also a positive of query i (another pair of the same query, a shared document)
is masked out of query i's row rather than counted as a negative.

Pair sources (each step draws one micro-batch from one source, round robin over sources):
  title-abstract, conclusion-rest   from the prepared data's train split (data.kinds)
  beir:DIR                          the qrels/train.tsv of each BEIR directory in data.beir
  bioasq                            data.bioasq (BioASQ JSON) over data.dir's documents
"""
# This module is the command's face: `--help` imports it alone, so it loads neither torch nor
# transformers; biomamba.train.retrieval_train holds the run and is imported by `run` (biomamba/cli.py).
from biomamba import flags


def add_arguments(parser):
    parser.add_argument("--config", help="YAML config (e.g. configs/retrieval-tiny.yaml)")
    parser.add_argument("--out", required=True, help="run directory (resumed when it has checkpoints)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. model.init_from=DIR data.dir=DIR train.max_steps=50")
    flags.add_arguments(parser, ["init_from", "tokenizer", "device", "precision", *flags.WANDB])


def run(args) -> int:
    from biomamba.train.retrieval_train import run

    return run(args)
