"""Instruction fine-tuning behind `biomamba finetune --objective causal-lm`, as BioMamba fine-tunes for
PubMedQA: the causal LM itself learns to answer, and `biomamba eval-qa` then scores it.

    item     a QAItem of the task file (biomamba/data/qa_formats.py: pubmedqa, bioasq, medqa, medmcqa,
             mmlu, mc), the same reader eval-qa uses
    prompt   eval-qa's prompt for that kind (eval/qa_prompts.doc_to_text), e.g.
             "Abstract: ...\\nQuestion: ...\\nAnswer:"
    answer   " " + the gold choice (doc_to_choice: yes/no/maybe, or the letter A-D)
    tokens   the pair encoded as eval-qa encodes it (eval/qa_scoring.encode_pair, lm-eval's HFLM way,
             the tokenizer's own special tokens included): eval-qa's `lm-eval` protocol scores exactly
             these answer tokens after exactly these prompt tokens, and its `biomamba` protocol the
             first of them
    labels   -100 over the prompt and the padding, the answer's ids over the answer: the loss is the mean
             next-token cross-entropy over the answer tokens of a micro-batch and nothing else
Items longer than data.max_length lose prompt tokens on the left (eval-qa truncates the same way).

One seed trains in RUN_DIR/seed_N through the shared run skeleton and loop (train/run.py, train/loop.py:
checkpoints, exact resume, metrics.jsonl, W&B job_type finetune); batches are a function of (seed, step)
(finetune.ExampleBatches). There is no model selection: seed_N/model is the model of the last step
(under model.lora, its adapters merged in; the checkpoints keep them unmerged so a resume is exact). The
val answer loss (data.val_fraction of the items, by a hash of the item id) is logged every
train.eval_every steps.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from biomamba.data.qa_formats import QAFormatError, parse_task_spec
from biomamba.data.splits import unit_hash
from biomamba.io import write_report
from biomamba.resolve import ModelSpecError, local_model, model_family, read_config
from biomamba.train.checkpointer import Checkpointer, write_model_dir
from biomamba.train.config import ConfigError
from biomamba.train.finetune import ExampleBatches, budget_fingerprint, finished_seed, seed_logging
from biomamba.train.finetune_models import LoraClassifier, load_classifier_tokenizer, with_lora
from biomamba.train.loop import Evaluation, Objective
from biomamba.train.run import RunSpec, execute, write_run_config

IGNORE = -100  # torch's cross_entropy ignore_index: prompt and padding positions
SFT_KINDS = ("pubmedqa", "bioasq", "medqa", "medmcqa", "mmlu", "mc")  # eval-qa kinds that are files of items


# ----------------------------------------------------------------------------- items -> tokens

def encode_item(encode_one, kind: str, item, max_length: int) -> dict:
    """{"input_ids", "labels"}: eval-qa's prompt then " " + the gold answer; labels -100 over the prompt."""
    from biomamba.eval.qa_prompts import TARGET_DELIMITER, doc_to_choice, doc_to_text
    from biomamba.eval.qa_scoring import encode_pair
    prompt, answer = doc_to_text(kind, item), TARGET_DELIMITER + doc_to_choice(kind, item)[item.answer]
    head, continuation = encode_pair(encode_one, prompt, answer)
    ids, labels = head + continuation, [IGNORE] * len(head) + continuation
    return {"input_ids": ids[-max_length:], "labels": labels[-max_length:], "truncated": len(ids) > max_length}


def collate_answers(items: list[dict], labels: list[list], pad_id: int) -> dict:
    """Right-padded input_ids and attention_mask; labels padded with -100 (padding is never scored)."""
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, (item, label) in enumerate(zip(items, labels)):
        n = len(item["input_ids"])
        ids[row, :n], mask[row, :n], targets[row, :n] = torch.tensor(item["input_ids"]), 1, torch.tensor(label)
    return {"input_ids": ids, "attention_mask": mask, "labels": targets}


def answer_loss(model, batch):
    """Mean next-token cross-entropy over the positions whose label is not -100 (the answer tokens)."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    targets = batch["labels"].to(device)[:, 1:]  # position t predicts token t + 1
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)


# ----------------------------------------------------------------------------- task and model

def load_items(spec: str, val_fraction: float) -> tuple[str, dict]:
    """(kind, {"train": items, "val": items}): eval-qa's reader; val by a hash of the item id."""
    kind = spec.partition(":")[0]
    if kind not in SFT_KINDS:
        raise ConfigError(f"task {spec!r}: --objective causal-lm takes KIND:FILE with KIND one of "
                          f"{', '.join(SFT_KINDS)} (eval-qa's task files; for the title task, write a training "
                          "file with bench/title_yesno.py)")
    task = parse_task_spec(spec)
    splits = {"train": [], "val": []}
    for item in task.items:
        splits["val" if unit_hash(f"sft-val:{item.id}") < val_fraction else "train"].append(item)
    if not splits["train"]:
        raise QAFormatError(f"{task.path}: no training items left after data.val_fraction={val_fraction}")
    return kind, splits


def causal_lm_family(spec: str) -> str:
    """'biomamba' for Mamba checkpoints of any layout, 'transformers' for any other causal LM directory."""
    location = local_model(spec)
    if not isinstance(location, Path):
        raise ModelSpecError(f"{spec}: no such model directory (--objective causal-lm reads local models only)")
    family, scoring = model_family(read_config(location))
    if scoring != "causal":
        raise ModelSpecError(f"{location}: a masked LM; --objective causal-lm fine-tunes causal LMs")
    return family


def build_causal_lm(spec: str, family: str, cfg):
    """The causal LM to fine-tune (seed torch first): pretrained, or model.init=random (same architecture,
    every weight drawn afresh), wrapped for LoRA under model.lora."""
    location = local_model(spec)
    if family == "biomamba":
        from biomamba import BioMambaForCausalLM
        model = BioMambaForCausalLM.from_pretrained(location, scan_backend=cfg.model.scan_backend)
    else:
        from transformers import AutoModelForCausalLM

        from biomamba.model_files import check_model_dir
        check_model_dir(location)
        model = AutoModelForCausalLM.from_pretrained(location, local_files_only=True)
    if cfg.model.init == "random":
        model = type(model)(model.config)
    model.train()
    if not cfg.model.lora:
        return model
    wrapped = with_lora(model, family, cfg.model, head=False)
    assert isinstance(wrapped, LoraClassifier)  # the loop's and checkpointer's view of a peft model
    return wrapped


# ----------------------------------------------------------------------------- one seed

@torch.no_grad()
def mean_answer_loss(model, encoded, batch_size, pad_id) -> float:
    """The answer-token cross-entropy over a split, weighted by answer tokens."""
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        part = encoded[start:start + batch_size]
        batch = collate_answers(part, [e["labels"] for e in part], pad_id)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(answer_loss(model, batch)) * n
        count += n
    return total / max(count, 1)


def make_evaluate(val, cfg, pad_id):
    def evaluate(model, step) -> Evaluation:
        return Evaluation({"answer_loss": mean_answer_loss(model, val, cfg.data.eval_batch_size, pad_id)})
    return evaluate if val else None


def train_seed(seed, cfg, data, tokenizer, run_dir: Path, device) -> dict:
    seed_dir = run_dir / f"seed_{seed}"
    previous = finished_seed(seed, seed_dir, cfg)
    if previous is not None:
        return previous
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    model = build_causal_lm(cfg.model.path, data["family"], cfg).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    train = data["train"]
    batches = ExampleBatches(train, [e["labels"] for e in train], cfg.train.batch_size, cfg.train.grad_accum, seed,
                             pad_id, collate_fn=collate_answers)
    resumed = Checkpointer(seed_dir).latest_step()
    objective = Objective(batches_for=batches.for_step, loss_fn=answer_loss, prefix="finetune",
                          items_in=lambda b: int(b["attention_mask"].sum()),
                          evaluate=make_evaluate(data["val"], cfg, pad_id))

    def on_finish(trainer, final) -> dict:
        """seed_N/model: the last step's model, LoRA adapters merged in (a plain model directory)."""
        out = seed_dir / "model"
        write_model_dir(out, model.merged() if cfg.model.lora else model, tokenizer)
        wall = time.perf_counter() - start_time
        return {"seed": seed, "model_dir": str(out), "final_train_loss": final.get("loss"),
                "val_answer_loss": final.get("answer_loss"), "wall_s": wall, "resumed_from": resumed,
                "train_tokens_per_s": trainer.items_seen / max(wall, 1e-9), "budget": budget_fingerprint(cfg)}

    describe = (f"seed {seed}: causal-lm SFT of {data['family']} on {len(train):,} {data['kind']} items"
                + (", LoRA" if cfg.model.lora else ", full"))
    spec = RunSpec(cfg, seed_dir, model, objective, device, tokenizer, describe=describe, final_model=False,
                   facts={"seed": seed, "objective": "causal-lm", "examples": data["counts"]},
                   on_finish=on_finish, logging=seed_logging(cfg, run_dir, seed), job_type="finetune",
                   source_model=cfg.model.path)
    execute(spec)
    return json.loads((seed_dir / "results.json").read_text())


# ----------------------------------------------------------------------------- the run

def prepare(cfg, tokenizer) -> dict:
    from biomamba.eval.perplexity import encoder, quiet_length_warnings
    family = causal_lm_family(cfg.model.path)
    kind, splits = load_items(cfg.task, cfg.data.val_fraction)
    encode_one = encoder(tokenizer)
    max_length = min(cfg.data.max_length, positions_of(cfg.model.path) or cfg.data.max_length)
    with quiet_length_warnings():
        encoded = {name: [encode_item(encode_one, kind, item, max_length) for item in items]
                   for name, items in splits.items()}
    return {"family": family, "kind": kind, **encoded, "max_length": max_length,
            "counts": {k: len(v) for k, v in splits.items()},
            "truncated": {k: sum(e["truncated"] for e in v) for k, v in encoded.items()},
            "mean_tokens": {k: float(np.mean([len(e["input_ids"]) for e in v])) if v else 0.0
                            for k, v in encoded.items()}}


def positions_of(spec: str) -> int | None:
    """A transformer's positional limit (config.json), which caps data.max_length; None for Mamba."""
    raw = read_config(local_model(spec))
    return next((raw[k] for k in ("n_positions", "max_position_embeddings") if isinstance(raw.get(k), int)), None)


def finetune_causal_lm(cfg, run_dir: Path, device) -> dict:
    family = causal_lm_family(cfg.model.path)
    tokenizer = load_classifier_tokenizer(cfg.model.path, family, cfg)
    data = prepare(cfg, tokenizer)
    run_dir.mkdir(parents=True, exist_ok=True)
    facts = {"objective": "causal-lm", "model_family": family, "task_kind": data["kind"], "examples": data["counts"],
             "max_length": data["max_length"], "truncated_examples": data["truncated"],
             "mean_tokens": data["mean_tokens"]}
    write_run_config(run_dir, cfg, facts)
    per_seed = [train_seed(seed, cfg, data, tokenizer, run_dir, device) for seed in cfg.seeds]
    results = aggregate(cfg, per_seed, facts)
    write_report(run_dir, "results", results_markdown(results), results)
    return results


def aggregate(cfg, per_seed, facts) -> dict:
    keys = ("seed", "model_dir", "final_train_loss", "val_answer_loss", "wall_s", "steps", "resumed_from")
    resolved = per_seed[0]["resolved"]
    return {"objective": "causal-lm", "task": cfg.task, "model": cfg.model.path, "model_family": facts["model_family"],
            "init": cfg.model.init, "lora": cfg.model.lora, "parameters": resolved["parameters"],
            "trainable_parameters": resolved["trainable_parameters"], "seeds": list(cfg.seeds),
            "per_seed": [{k: r.get(k) for k in keys} for r in per_seed], "examples": facts["examples"],
            "truncated_examples": facts["truncated_examples"],
            "budget": {"max_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size * cfg.train.grad_accum,
                       "lr": cfg.optim.lr, "schedule": cfg.optim.schedule, "max_length": cfg.data.max_length},
            "next": "biomamba eval-qa --model RUN_DIR/seed_N --task KIND:TEST_FILE --out qa.json"}


def results_markdown(results: dict) -> str:
    lines = [f"# finetune --objective causal-lm: {results['task']}", "",
             f"model {results['model']} ({results['model_family']}, {'LoRA' if results['lora'] else 'full'}, "
             f"init {results['init']}); {results['examples']['train']} train / {results['examples']['val']} val items",
             "",
             "| seed | steps | final train loss | val answer loss | wall s | model |", "|---|---|---|---|---|---|"]
    for r in results["per_seed"]:
        val = "-" if r["val_answer_loss"] is None else f"{r['val_answer_loss']:.4f}"
        lines.append(f"| {r['seed']} | {r['steps']} | {r['final_train_loss']:.4f} | {val} | {r['wall_s']:.0f} | "
                     f"{r['model_dir']} |")
    return "\n".join(lines) + "\n\nScore with: " + results["next"] + "\n"


def summary_line(results: dict, out) -> str:
    losses = ", ".join(f"seed {r['seed']}: val answer loss "
                       + ("-" if r["val_answer_loss"] is None else f"{r['val_answer_loss']:.4f}")
                       for r in results["per_seed"])
    return (f"{results['task']} / {results['model']} (causal-lm, {'LoRA' if results['lora'] else 'full'}): {losses}; "
            f"{Path(out) / 'results.md'}; score with biomamba eval-qa --model {Path(out)}/seed_N")
