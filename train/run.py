"""The one run skeleton: pretrain, finetune and retrieval training each run through here.

    def body(device):
        model = build(...).to(device)
        return execute(RunSpec(cfg, run_dir, model, objective, device, tokenizer, facts, describe))
    final = in_session(cfg.run.device, "pretrain", body, distributed_ok=True)

`in_session` chooses the device (joining the torchrun process group when launched by torchrun,
refusing torchrun for one-process commands), runs the body and leaves the group cleanly. `execute`
owns the rest, each piece built before the first thing that uses it:
  1. the resolved config: the command's facts, the device, world size and parallelism, precision,
     parameters (all and trained), the git commit and the backend of every op (the model's "auto"
     made concrete), the model the run started from (model_origin) and its W&B identity (job_type,
     group, id: see train/logger.py), written to RUN_DIR/config.yaml by rank 0 before the first step;
  2. the checkpointer, the logger (metrics.jsonl truncated to the resumed step, W&B, progress bar)
     and the trainer built on both, resumed from the latest complete checkpoint;
  3. the loop; then the final model (RUN_DIR/model, with its tokenizer, unless the command keeps its
     own val-selected model) and RUN_DIR/results.json, each written atomically, and config.yaml again
     with the backends every op really used.
"""
import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from biomamba import locking, ops
from biomamba.config import BioMambaConfig
from biomamba.io import reporting_write_errors, sweep_temporaries, write_text
from biomamba.modeling import backends_used
from biomamba.runtime import git_commit, pick_device
from biomamba.tracking import model_origin
from biomamba.train import distributed
from biomamba.train.checkpointer import Checkpointer, write_model_dir
from biomamba.train.config import dump_yaml, to_dict
from biomamba.train.logger import RunLogger
from biomamba.train.loop import Objective, Trainer
from biomamba.train.models import count_parameters


@dataclass
class RunSpec:
    """What a command hands the skeleton."""
    cfg: object  # the command's config (a schema with train / optim / logging sections and a seed)
    run_dir: Path
    model: torch.nn.Module  # built on `device`, not wrapped for DDP/FSDP
    objective: Objective
    device: torch.device
    tokenizer: object = None  # saved beside the final model
    facts: dict = field(default_factory=dict)  # the command's own entries of config.yaml "resolved"
    describe: str = ""  # what is trained on what: the first line of the log
    final_model: bool = True  # False: the command keeps its own model directory (finetune's best)
    on_finish: Callable | None = None  # (trainer, final metrics) -> extra results.json entries, after the
    #                                    loop (finetune: writes its val-selected model first)
    logging: object = None  # a LoggingConfig other than cfg.logging (finetune: one W&B run per seed)
    job_type: str = "train"  # the W&B job_type: pretrain, finetune, retrieval-train
    source_model: str | None = None  # the model the run starts from: its W&B group becomes this run's


def in_session(device_name: str, command: str, body: Callable, distributed_ok: bool = False, out=None):
    """body(device) on this process's device; under torchrun inside the process group. `out`: the run
    directory, locked by rank 0 for the whole session (biomamba/locking.py): a second writer stops here."""
    if not distributed_ok:
        distributed.require_one_process(command)
    device = distributed.setup(pick_device(device_name).type)
    try:
        owner = locking.hold(out) if out is not None and distributed.is_main() else contextlib.nullcontext()
        with owner:
            result = body(device)
        distributed.barrier()  # rank 0 may still be writing the final model
        return result
    finally:
        # the DDP/FSDP model, freed with body's frame, holds the process group: it is destroyed
        # after them (destroying it first can hang or abort the process at exit)
        distributed.teardown()


def execute(spec: RunSpec) -> dict:
    """Train `spec.model` as `spec.cfg` says into `spec.run_dir`; returns the final metrics."""
    cfg, run_dir, main = spec.cfg, Path(spec.run_dir), distributed.is_main()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**spec.facts, **run_facts(spec)}
    checkpointer = Checkpointer(run_dir, cfg.train.keep_last)
    if main:  # the owner of the run directory (in_session's lock) removes what a killed run left
        remove_leftovers(run_dir, checkpointer)
    start = checkpointer.latest_step()
    origin = model_origin(spec.source_model) if spec.source_model else None
    logger = RunLogger(run_dir, {**to_dict(cfg), "resolved": resolved}, spec.logging or cfg.logging,
                       cfg.train.max_steps, start, enabled=main, job_type=spec.job_type, origin=origin)
    resolved.update(model_origin=origin.facts() if origin else None, wandb=logger.identity)
    wrapped = distributed.wrap(spec.model, spec.device, cfg.train.parallel)
    trainer = Trainer(wrapped, spec.objective, cfg, logger, checkpointer, spec.device)
    trainer.resume()
    if main:
        write_run_config(run_dir, cfg, resolved)
    logger.write(f"{spec.describe}; {describe_parameters(resolved)}, backends {describe_backends(resolved['backends'])}"
                 + (f"; resuming after step {start}" if start else ""))
    try:
        # a full disk: one line naming what failed and the checkpoint to resume from (Checkpointer.save
        # says which checkpoint it was writing)
        with reporting_write_errors(f"the run's output in {run_dir}", checkpointer.describe_safe):
            final = trainer.fit()
            weights = trainer.full_weights()  # a collective under FSDP
            if main:
                resolved["backends"] = {**resolved["backends"], **backends_used(spec.model)}
                write_run_config(run_dir, cfg, resolved)
                logger.summarize(finish(spec, trainer, final, resolved, weights))
    finally:
        logger.close()
    return final


def remove_leftovers(run_dir: Path, checkpointer: Checkpointer):
    """Partial checkpoints (step_N.tmp), a half-written final model (model.tmp) and temporary files
    (.NAME.tmp-PID) of a run that was killed or ran out of space: their space back, before anything new."""
    checkpointer.sweep()
    for partial in (run_dir / "model.tmp", run_dir / "model.trash"):
        shutil.rmtree(partial, ignore_errors=True)
    sweep_temporaries(run_dir)


def run_facts(spec: RunSpec) -> dict:
    """What every run records about where and how it trains."""
    cfg, model = spec.cfg, spec.model
    return {"git_commit": git_commit(), "device": str(spec.device), "world_size": distributed.world_size(),
            "parallel": cfg.train.parallel if distributed.world_size() > 1 else "none",
            "precision": precision_of(cfg.run.precision, spec.device),
            "parameters": count_parameters(model),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "backends": resolve_backends(model, spec.device)}


def precision_of(setting: str, device: torch.device) -> str:
    """What run.precision means on this device (see Trainer._autocast)."""
    if setting == "bf16" or (setting == "auto" and device.type == "cuda"):
        return "bf16 autocast"
    return "fp32"


def resolve_backends(model, device) -> dict:
    """The scan backend a BioMamba model's setting ("auto" or a name) means on `device`, recorded before
    training: selective_scan's for Mamba-1 blocks, ssd_scan's for Mamba-2 blocks; {} for models without
    scan ops (GPT-NeoX, BERT). The model's config is left as set: each call resolves "auto" the same way."""
    config = next((m.config for m in model.modules() if isinstance(getattr(m, "config", None), BioMambaConfig)),
                  None)
    if config is None:
        return {}
    if config.ssm_layer == "Mamba2":
        return {"ssd_scan": ops.resolve_ssd_backend(config.scan_backend, device)}
    return {"selective_scan": ops.resolve_backend(config.scan_backend, device)}


def describe_parameters(resolved: dict) -> str:
    total, trained = resolved["parameters"], resolved["trainable_parameters"]
    return f"{total / 1e6:.2f}M parameters" + (f" ({trained / 1e6:.3f}M trained)" if trained != total else "")


def describe_backends(backends: dict) -> str:
    return ", ".join(f"{op} {name}" for op, name in backends.items()) or "none (no selective-scan ops)"


def write_run_config(run_dir: Path, cfg, resolved: dict):
    write_text(run_dir / "config.yaml", dump_yaml({**to_dict(cfg), "resolved": resolved}))


def finish(spec: RunSpec, trainer, final: dict, resolved: dict, weights) -> dict:
    """The final model with its tokenizer, and results.json (rank 0); returns the results. `weights`:
    the whole state dict when the module holds only this rank's FSDP shard."""
    results = {"final": final, "resolved": resolved, "steps": trainer.step, "skipped_steps": trainer.skipped}
    if spec.final_model:
        write_model_dir(Path(spec.run_dir) / "model", spec.model, spec.tokenizer, weights)
        results["model_dir"] = str(Path(spec.run_dir) / "model")
    if spec.on_finish is not None:
        results.update(spec.on_finish(trainer, final))
    write_text(Path(spec.run_dir) / "results.json", json.dumps(results, indent=2) + "\n")
    return results
