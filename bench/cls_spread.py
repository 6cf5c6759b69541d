"""How much a BERT's [CLS] state depends on its input: the collapse check for the BERT baselines.

    python bench/cls_spread.py --data demo_out/data demo_out/bert-random demo_out/bert/model runs/bert-3000/model

A masked LM stuck at the unigram stage gives every input nearly the same [CLS] state, so a classifier
on top of it starts from a constant. For each model this encodes the test sentences of the prepared
sentence-roles task (a hash sample of --sentences) and prints the mean and minimum pairwise cosine of
their final-layer [CLS] states (1.0: the same state for every input) and the states' spread (the norm
of the per-dimension std over the norm of the mean state). Not a test: nothing is asserted.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from biomamba.bench_cli import report_table  # noqa: E402


def test_sentences(data_dir: str, count: int) -> list[str]:
    from biomamba.data.task_loaders import load_task
    from biomamba.train.finetune_config import FinetuneDataConfig
    task = load_task("sentence-roles", FinetuneDataConfig(dir=data_dir, max_eval_examples=count))
    return [example.text for example in task.splits["test"]]


@torch.no_grad()
def cls_states(model_dir: str, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging
    logging.set_verbosity_error()  # the MLM head's weights unused by AutoModel are expected, not news
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    states = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        states.append(model(**batch).last_hidden_state[:, 0].float())
    return torch.cat(states)


def spread(states: torch.Tensor) -> dict:
    unit = torch.nn.functional.normalize(states, dim=-1)
    cosines = (unit @ unit.T)[~torch.eye(len(states), dtype=torch.bool)]
    return {"mean_cos": cosines.mean().item(), "min_cos": cosines.min().item(),
            "spread": (states.std(0).norm() / states.mean(0).norm()).item()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="BERT model directories (AutoModel + AutoTokenizer)")
    parser.add_argument("--data", required=True, help="a prepared data directory (biomamba prepare)")
    parser.add_argument("--sentences", type=int, default=200, help="test sentences encoded (default 200)")
    args = parser.parse_args()
    texts = test_sentences(args.data, args.sentences)
    columns = ["model", "mean pairwise cos", "min pairwise cos", "spread"]
    rows = []
    for model_dir in args.models:
        figures = spread(cls_states(model_dir, texts))
        rows.append([model_dir, figures["mean_cos"], figures["min_cos"], figures["spread"]])
    print(f"[CLS] states of {len(texts)} sentence-roles test sentences from {args.data}")
    print("| " + " | ".join(columns) + " |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row[0]} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.4f} |")
    report_table("cls_spread", columns, rows, key=["model"], ratios=["mean pairwise cos", "spread"])


if __name__ == "__main__":
    main()
