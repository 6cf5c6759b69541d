"""Fine-tuning over seeds behind `biomamba finetune` (its command line and usage: train/finetune_cli.py)."""
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from biomamba import flags
from biomamba.checkpoints import CheckpointError
from biomamba.data.task_loaders import SPLITS, TaskError, load_task
from biomamba.eval.report_finetune import results_markdown
from biomamba.io import discard, write_report, write_text
from biomamba.metrics.classification import mean_std, summarise_seeds
from biomamba.resolve import ModelSpecError
from biomamba.runtime import git_commit
from biomamba.tracking import group_for, model_origin, recorded_run_id, start_run
from biomamba.train.checkpointer import Checkpointer
from biomamba.train.config import ConfigError, load_config, to_dict
from biomamba.train.finetune_config import FinetuneConfig, check_finetune
from biomamba.train.finetune_kinds import (HEADLINE, SUMMARY, TOKEN_KINDS, blurb_type, collate, encode_tokens,
                                           label_values, score_kind)
from biomamba.train.finetune_models import (build_classifier, tokenize_examples, load_classifier_tokenizer,
                                            classifier_family, save_selected, save_trainable, selected_step)
from biomamba.train.loop import Evaluation, NonFiniteLoss, Objective
from biomamba.train.run import RunSpec, execute, in_session, write_run_config
from biomamba.train.finetune_cli import add_arguments  # noqa: F401  (the command's arguments, re-exported)

LORA_BEST = "lora_best"  # seed_N/lora_best/step_N.safetensors: LoRA trainable tensors at each val improvement


def config_from_args(args) -> FinetuneConfig:
    overrides = list(args.overrides)
    if args.task:
        overrides.append(f"task={json.dumps(args.task)}")
    if getattr(args, "objective", None):
        overrides.append(f"objective={json.dumps(args.objective)}")
    if args.model:
        overrides.append(f"model.path={json.dumps(args.model)}")
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 1,2,3") from None
        overrides.append(f"seeds={json.dumps(seeds)}")
    overrides += flags.overrides(args)
    cfg = load_config(args.config, overrides, schema=FinetuneConfig, check=check_finetune)
    missing = [name for name, value in (("--task", cfg.task), ("--model", cfg.model.path)) if not value]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required (or task: / model.path: in the config)")
    return cfg


# ----------------------------------------------------------------------------- batches

class ExampleBatches:
    """Step s (1-based) takes examples [(s-1)*G, s*G) of an endless sequence of per-epoch
    permutations drawn from (seed, epoch), G = batch_size * grad_accum: the batch is a function of
    (seed, step), so a resumed run sees what an uninterrupted one would."""

    def __init__(self, encoded, labels, batch_size, grad_accum, seed, pad_id, kind="classification",
                 collate_fn=None):
        # collate_fn(items, labels, pad_id): the causal-LM objective brings its own; else the task kind's
        self.encoded, self.labels, self.kind = encoded, labels, kind
        self.collate_fn = collate_fn or (lambda items, labels, pad_id: collate(items, labels, pad_id, kind))
        self.batch_size, self.grad_accum, self.seed, self.pad_id = batch_size, grad_accum, seed, pad_id
        self._epoch, self._perm = None, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.encoded))
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.encoded))
            self._epoch = epoch
        return int(self._perm[offset])

    def for_step(self, step: int) -> list[dict]:
        size = self.batch_size * self.grad_accum
        chosen = [self._index(p) for p in range((step - 1) * size, step * size)]
        return [self.collate_fn([self.encoded[i] for i in part], [self.labels[i] for i in part], self.pad_id)
                for part in (chosen[k:k + self.batch_size] for k in range(0, size, self.batch_size))]


def classification_loss(model, batch):
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in batch.items()}).loss


@torch.no_grad()
def predict(model, encoded, batch_size, pad_id) -> list[torch.Tensor]:
    """Float logits per example: (num_labels,) for a sequence head, (tokens, num_labels) for a token head
    (its real tokens only); examples batched by length so little padding is computed."""
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    logits = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        batch = collate([encoded[i] for i in part], None, pad_id)
        out = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        for row, i in enumerate(part):
            logits[i] = out[row, :len(encoded[i]["input_ids"])] if out.ndim == 3 else out[row]
    return logits


def score(model, split, batch_size, pad_id, names, threshold=None, rows=False):
    """One split's metrics (the task kind's, finetune_kinds.score_kind) and mean loss; with rows=True,
    (metrics, the per-example gold and predicted labels). threshold: multilabel's, chosen on val."""
    logits = predict(model, split["encoded"], batch_size, pad_id)
    metrics, predictions = score_kind(split["kind"], logits, split, names, threshold)
    return (metrics, predictions) if rows else metrics


def summary(metrics: dict, kind: str = "classification") -> dict:
    return {k: metrics[k] for k in (*SUMMARY[kind], "loss") if k in metrics}


# ----------------------------------------------------------------------------- model selection

class Selection:
    """Val scores at every evaluation and the test scores of the best one (by the task's val metric `key`:
    macro-F1, entity F1, micro-F1, Pearson...; the earliest on ties), kept in seed_N/selection.json so
    that a resumed run selects as a straight one."""

    def __init__(self, path: Path, resumed_step: int, key: str = "macro_f1"):
        self.path, self.key = path, key  # the val metric that selects (finetune_kinds.HEADLINE)
        self.evals = []
        if path.is_file():
            self.evals = [e for e in json.loads(path.read_text())["evals"] if e["step"] <= resumed_step]

    @property
    def best(self) -> dict | None:
        scored = [e for e in self.evals if e.get("test") is not None]
        return max(scored, key=lambda e: (e["val"][self.key], -e["step"])) if scored else None

    def is_better(self, val: dict) -> bool:
        return self.best is None or val[self.key] > self.best["val"][self.key]

    def threshold_at(self, step) -> float | None:
        """The multi-label threshold chosen on val at `step` (None for other kinds)."""
        return next(e for e in self.evals if e["step"] == step)["val"].get("threshold")

    def add(self, step, val, test):
        self.evals.append({"step": step, "val": val, "test": test})
        write_text(self.path, json.dumps({"evals": self.evals}) + "\n")


class BestModel:
    """seed_N/model: the val-selected classifier, rewritten (save_selected) at every val improvement.

    A resume forgets the evaluations after its checkpoint (Selection) and replays them, so model/ must
    then be the best as of that checkpoint. While model/ is newer than the latest checkpoint, that one
    is kept in model.checkpointed/, and reconcile(resumed_step) puts it back. Every change renames a
    complete directory, so an interruption at any moment leaves the right one of the two whole.
    """

    def __init__(self, seed_dir: Path, tokenizer):
        self.path, self.kept = seed_dir / "model", seed_dir / "model.checkpointed"
        self.tokenizer, self.checkpointer = tokenizer, Checkpointer(seed_dir)

    @property
    def step(self) -> int | None:
        return selected_step(self.path)

    def save(self, model, step: int, threshold: float | None = None):
        """The new best, at `step` (evaluated before its own checkpoint is written); `threshold`: a
        multi-label head's, chosen on val at that step."""
        current = self.step
        if current is not None and current <= self.checkpoint_step():  # the best as of that checkpoint
            discard(self.kept)
            self.path.rename(self.kept)
        save_selected(model, self.tokenizer, self.path, step, threshold=threshold)

    def reconcile(self, checkpoint_step: int):
        """Make model/ the best as of the checkpoint at `checkpoint_step` (absent if there was none)."""
        current = self.step
        if current is None or current > checkpoint_step:
            discard(self.path)
            kept = selected_step(self.kept)
            if kept is not None and kept <= checkpoint_step:
                self.kept.rename(self.path)
        discard(self.kept)
        shutil.rmtree(self.path.with_name(self.path.name + ".tmp"), ignore_errors=True)

    def checkpoint_step(self) -> int:
        return self.checkpointer.latest_step()


def make_evaluate(data, cfg, pad_id, names, selection, seed_dir: Path):
    """Val at every evaluation; test whenever the val metric improves (a new best: the loop keeps it),
    its predictions written to seed_N/test_predictions.jsonl (so the reported test scores can be
    recomputed from that file)."""
    batch_size, kind, key = cfg.data.eval_batch_size, data["test"]["kind"], selection.key

    def evaluate(model, step) -> Evaluation:
        val = score(model, data["val"], batch_size, pad_id, names)
        test, rows = None, {}
        improved = selection.is_better(val)
        if improved:
            test, predictions = score(model, data["test"], batch_size, pad_id, names, val.get("threshold"), rows=True)
            write_predictions(seed_dir / "test_predictions.jsonl", data["test"], predictions)
            rows["finetune"] = {"split": "test", **{f"test_{k}": v for k, v in summary(test, kind).items()},
                                **{f"best_val_{k}": v for k, v in summary(val, kind).items()}}
        selection.add(step, val, test)
        metrics = {**summary(val, kind), f"best_{key}": selection.best["val"][key]}
        return Evaluation(metrics, rows=rows, best=improved)

    return evaluate


def write_predictions(path: Path, split: dict, predictions: list[dict]):
    """One line per test example: its index, the file's own id when it has one (HoC's PMID_sN), its text
    (or tokens) and the gold and predicted labels."""
    lines = []
    for index, (example, row) in enumerate(zip(split["examples"], predictions)):
        source = {} if "tokens" in row else {"text": example.text, **(
            {"text_pair": example.text_pair} if example.text_pair is not None else {})}
        own_id = {"id": example.id} if example.id is not None else {}
        lines.append(json.dumps({"index": index, **own_id, **source, **row}))
    write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- one seed

def budget_fingerprint(cfg) -> dict:
    """What must not change between a seed's runs for its results to stand (not seeds, logging)."""
    d = to_dict(cfg)
    return {k: d[k] for k in ("task", "model", "data", "optim", "train")}


def lora_best(seed_dir: Path, step: int) -> Path:
    return seed_dir / LORA_BEST / f"step_{step:07d}.safetensors"


def seed_logging(cfg, run_dir: Path, seed: int):
    """One W&B run per seed, named after the run; grouped with the model it fine-tunes (train/logger.py)."""
    log_cfg = cfg.logging
    return type(log_cfg)(**{**to_dict(log_cfg), "name": f"{log_cfg.name or run_dir.name}-seed{seed}"})


def finished_seed(seed: int, seed_dir: Path, cfg) -> dict | None:
    """A seed's results when it finished with this budget; a ConfigError when with another one."""
    done = seed_dir / "results.json"
    if not done.is_file():
        return None
    previous = json.loads(done.read_text())
    if previous.get("budget") != budget_fingerprint(cfg):
        raise ConfigError(f"{seed_dir} was trained with another config; use a new --out")
    print(f"seed {seed}: already done ({done})", file=sys.stderr)
    return previous


def train_seed(seed, cfg, data, tokenizer, family, labels, run_dir: Path, device) -> dict:
    seed_dir = run_dir / f"seed_{seed}"
    previous = finished_seed(seed, seed_dir, cfg)
    if previous is not None:
        return previous
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    model = build_classifier(cfg.model.path, family, labels, cfg, data["train"]["kind"]).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kind = data["train"]["kind"]
    batches = ExampleBatches(data["train"]["encoded"], data["train"]["labels"], cfg.train.batch_size,
                             cfg.train.grad_accum, seed, pad_id, kind)
    resumed = Checkpointer(seed_dir).latest_step()
    selection = Selection(seed_dir / "selection.json", resumed, HEADLINE[kind])
    if cfg.model.lora:  # merged into seed_N/model once training is done, from the adapters saved here
        on_best = lambda m, step: save_trainable(m, lora_best(seed_dir, step))
    else:
        best_model = BestModel(seed_dir, tokenizer)
        best_model.reconcile(resumed)
        on_best = lambda m, step: best_model.save(m, step, selection.threshold_at(step))
    objective = Objective(batches_for=batches.for_step, loss_fn=classification_loss,
                          items_in=lambda b: len(b["labels"]), prefix="finetune", on_best=on_best,
                          evaluate=make_evaluate(data, cfg, pad_id, labels, selection, seed_dir))

    def on_finish(trainer, final) -> dict:
        """seed_N/model = the val-selected model, and this seed's results."""
        best = selection.best
        if cfg.model.lora:  # the val-selected model, whose test scores are reported, merged for users
            save_selected(model, tokenizer, seed_dir / "model", best["step"], lora_best(seed_dir, best["step"]),
                          best["val"].get("threshold"))
        else:
            best_model.reconcile(trainer.step)  # the last step is checkpointed: model.checkpointed/ goes
            if best_model.step != best["step"]:  # a seed begun before models were saved, or model/ deleted
                trainer.logger.write(f"warning: {best_model.path} does not hold the selected step {best['step']} "
                                     f"(it holds {best_model.step}); its test scores are still reported")
        wall = time.perf_counter() - start_time
        return {"seed": seed, "best_step": best["step"], "val": best["val"], "test": best["test"],
                "final_val": summary(selection.evals[-1]["val"], kind), "wall_s": wall, "resumed_from": resumed,
                "train_examples_per_s": trainer.items_seen / max(wall, 1e-9), "budget": budget_fingerprint(cfg)}

    describe = (f"seed {seed}: {family}, {len(batches.encoded):,} train examples"
                + (", LoRA" if cfg.model.lora else ""))
    spec = RunSpec(cfg, seed_dir, model, objective, device, tokenizer, facts={"seed": seed}, describe=describe,
                   final_model=False, on_finish=on_finish, logging=seed_logging(cfg, run_dir, seed),
                   job_type="finetune", source_model=cfg.model.path)
    execute(spec)
    return json.loads((seed_dir / "results.json").read_text())


# ----------------------------------------------------------------------------- the run

def prepare_data(cfg, tokenizer, family):
    """The task and, per split: encoded inputs, the label values collate batches, the gold labels,
    the examples, the kind (and a relation task's negative class)."""
    task = load_task(cfg.task, cfg.data)  # streamed; data.max_*_examples keep a fixed hash subset
    data = {}
    for split in SPLITS:
        examples = task.splits[split]
        encode = encode_tokens if task.kind in TOKEN_KINDS else tokenize_examples
        encoded = encode(examples, tokenizer, family, cfg.data.max_length)
        data[split] = {"encoded": encoded, "labels": label_values(task.kind, examples, encoded, len(task.labels)),
                       "gold": [e.label for e in examples], "examples": examples, "kind": task.kind,
                       "negative": task.negative_label, "tokens": [e.tokens for e in examples]}
    return task, data


def finetune(cfg, run_dir: Path) -> dict:
    if cfg.objective == "causal-lm":
        from biomamba.train.finetune_causal_lm import finetune_causal_lm
        body = lambda device: finetune_causal_lm(cfg, Path(run_dir), device)
    else:
        body = lambda device: _finetune(cfg, Path(run_dir), device)
    return in_session(cfg.run.device, "finetune", body, out=run_dir)


def _finetune(cfg, run_dir: Path, device) -> dict:
    family = classifier_family(cfg.model.path)
    tokenizer = load_classifier_tokenizer(cfg.model.path, family, cfg)
    task, data = prepare_data(cfg, tokenizer, family)
    run_dir.mkdir(parents=True, exist_ok=True)
    facts = {"model_family": family, "kind": task.kind, "labels": task.labels, "task_source": task.source, "examples": task.counts(),
             "examples_in_source": task.seen,
             "mean_tokens": {s: float(np.mean([len(e["input_ids"]) for e in data[s]["encoded"]])) for s in SPLITS}}
    write_run_config(run_dir, cfg, facts)
    per_seed = [train_seed(seed, cfg, data, tokenizer, family, task.labels, run_dir, device) for seed in cfg.seeds]
    results = aggregate(cfg, task, per_seed, facts)
    write_report(run_dir, "results", results_markdown(results), results)
    log_summary_run(cfg, run_dir, results)
    return results


# ----------------------------------------------------------------------------- W&B summary over seeds

def per_seed_columns(kind: str) -> list[str]:
    return ["seed", "best_step", f"val_{HEADLINE[kind]}", *(f"test_{k}" for k in SUMMARY[kind]), "wall_s", "wandb_id"]


def log_summary_run(cfg, run_dir: Path, results: dict):
    """One W&B run (job_type finetune-summary) beside the seeds' runs, in their group: mean and std
    over seeds as its summary (mean/test/macro_f1, std/test/macro_f1, ...) and a table of the seeds."""
    log_cfg, origin = cfg.logging, model_origin(cfg.model.path)
    seed_ids = {str(r["seed"]): recorded_run_id(run_dir / f"seed_{r['seed']}") for r in results["per_seed"]}
    kind = results["kind"]
    rows = [[r["seed"], r["best_step"], r["val"][HEADLINE[kind]], *(r["test"][k] for k in SUMMARY[kind]),
             r["wall_s"], seed_ids[str(r["seed"])]] for r in results["per_seed"]]
    config = {**to_dict(cfg), "git_commit": git_commit(), "model_origin": origin.facts(), "seed_runs": seed_ids}
    with start_run(job_type="finetune-summary", name=log_cfg.name or run_dir.name, directory=run_dir,
                   project=log_cfg.project, group=group_for(log_cfg.group, origin), tags=log_cfg.tags,
                   config=config, mode=log_cfg.mode, keep_id=True, enabled=log_cfg.wandb) as tracker:
        tracker.summarize({"mean": results["mean"], "std": results["std"]})
        tracker.log_table("finetune/per_seed", per_seed_columns(kind), rows)


def aggregate(cfg, task, per_seed, facts) -> dict:
    rows = [{k: r[k] for k in ("seed", "best_step", "val", "test", "wall_s", "steps")} for r in per_seed]
    mean, std = {}, {}
    for split in ("val", "test"):
        mean[split], std[split] = summarise_seeds([r[split] for r in rows], SUMMARY[task.kind])
    mean["wall_s"], std["wall_s"] = mean_std([r["wall_s"] for r in rows])
    per_class = ({name: mean_std([r["test"]["per_class"][name]["f1"] for r in rows]) for name in task.labels}
                 if "per_class" in rows[0]["test"] else {})
    resolved = per_seed[0]["resolved"]
    task_type, metric = blurb_type(task.kind, cfg.task)
    return {"task": cfg.task, "kind": task.kind, "metric": HEADLINE[task.kind], "blurb_type": task_type,
            "blurb_metric": metric, "bidirectional": cfg.model.bidirectional,
            "model": cfg.model.path, "model_family": facts["model_family"], "init": cfg.model.init,
            "parameters": resolved["parameters"], "trainable_parameters": resolved["trainable_parameters"],
            "backends": resolved["backends"], "seeds": list(cfg.seeds), "per_seed": rows,
            "mean": mean, "std": std,
            "per_class_test_f1": {n: {"mean": m, "std": s, "support": rows[0]["test"]["per_class"][n]["support"]}
                                  for n, (m, s) in per_class.items()},
            "examples": facts["examples"], "split_sizes": {s: task.size(s) for s in SPLITS}, "labels": task.labels,
            "budget": {"max_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size * cfg.train.grad_accum,
                       "lr": cfg.optim.lr, "schedule": cfg.optim.schedule, "max_length": cfg.data.max_length},
            "std_definition": "sample standard deviation over seeds (ddof=1)"}


def run(args) -> int:
    try:
        cfg = config_from_args(args)
        results = finetune(cfg, Path(args.out))
    except (ConfigError, NonFiniteLoss, TaskError, ModelSpecError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if cfg.objective == "causal-lm":
        from biomamba.train.finetune_causal_lm import summary_line
        print(summary_line(results, args.out))
        return 0
    m, s = results["mean"]["test"], results["std"]["test"]
    if results["kind"] == "classification":
        scores = f"accuracy {m['accuracy']:.4f} +- {s['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} +- {s['macro_f1']:.4f}"
    else:
        scores = f"{results['metric']} {m[results['metric']]:.4f} +- {s[results['metric']]:.4f}"
    print(f"{results['task']} / {results['model']}: test {scores} over seeds {results['seeds']}; "
          f"{Path(args.out) / 'results.md'}")
    return 0
