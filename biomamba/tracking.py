"""The one W&B layer: every command that produces results is a W&B run (rank 0 only).

    tracker = start_run(job_type="eval-ppl", name="ppl", directory=out_dir, group=origin.group,
                        config={..., "model_origin": origin.facts()})
    tracker.summarize({"eval-ppl/pubmed-val/bits_per_byte": 1.23})
    tracker.log_table("eval-ppl/results", columns, rows)
    tracker.finish()

A run is offline (files under DIR/wandb/, `wandb sync` later) unless W&B is configured (WANDB_API_KEY,
`wandb login`, WANDB_MODE=online) or the caller asks for mode="online"; WANDB_MODE=offline or
disabled is obeyed. A Tracker without a run (W&B off, or a process other than rank 0) does nothing,
so commands never branch on it.

Every run of a project is tied to the model it measured by its W&B `group` (model_origin): a model
that came from a biomamba training run directory (RUN_DIR or RUN_DIR/model) takes that run's group
and records its W&B id in the config (`model_origin.run_id`), so a dashboard puts a pretraining curve,
the model's perplexity, its fine-tuning scores and its retrieval scores side by side.
"""
from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from biomamba.io import write_text
from biomamba.resolve import training_run_dir
from biomamba.runtime import git_commit

PROJECT = "biomamba"
MODES = ("auto", "offline", "online")


def wandb_configured() -> bool:
    """Whether this user has set W&B up to reach a server (an API key, `wandb login`, WANDB_MODE=online)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str = "auto") -> str:
    """"auto" -> WANDB_MODE when it says offline/disabled, else online if W&B is configured, else offline."""
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_configured() else "offline"


def is_rank_zero() -> bool:
    """Rank 0 of a torchrun job (or a single process): the only process that talks to W&B."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------- which model a run measured

@dataclass(frozen=True)
class ModelOrigin:
    """The model a run measured and the W&B run that trained it, if a biomamba run did."""
    path: str  # the model as the user named it
    group: str  # the training run's W&B group, else the model directory's name
    run_dir: str | None = None  # the training run's directory (holds config.yaml, wandb_id)
    run_id: str | None = None  # the training run's W&B id (RUN_DIR/wandb_id); None when it logged none

    def facts(self) -> dict:
        return asdict(self)


def model_origin(model_path) -> ModelOrigin:
    """Where `model_path` came from: a training run's group and W&B id, or the directory's own name."""
    path = Path(model_path).resolve()  # "." and "RUN/model/" have names too
    run_dir = training_run_dir(path)
    if run_dir is None:  # a plain model dir; "model" alone says nothing, its parent names it
        return ModelOrigin(path=str(model_path), group=path.parent.name if path.name == "model" else path.name)
    return ModelOrigin(path=str(model_path), group=recorded_group(run_dir), run_dir=str(run_dir),
                       run_id=recorded_run_id(run_dir))


def recorded_group(run_dir: Path) -> str:
    """The W&B group a training run used: config.yaml resolved.wandb.group (what RunLogger chose),
    else its logging.group, else the run directory's name (RunLogger's rule without a model origin)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    wandb_facts = (config.get("resolved") or {}).get("wandb") or {}
    return wandb_facts.get("group") or (config.get("logging") or {}).get("group") or run_dir.name


def recorded_run_id(run_dir: Path) -> str | None:
    id_file = Path(run_dir) / "wandb_id"
    return id_file.read_text().strip() if id_file.is_file() else None


def run_id_for(directory) -> str:
    """The W&B id kept in DIR/wandb_id (made on first use): a rerun of a command on the same
    directory continues the same W&B run instead of adding another."""
    id_file = Path(directory) / "wandb_id"
    run_id = recorded_run_id(directory) or uuid.uuid4().hex[:12]
    write_text(id_file, run_id + "\n")
    return run_id


# ----------------------------------------------------------------------------- a run

class Tracker:
    """One W&B run, or none (W&B off, not rank 0): then every method does nothing."""

    def __init__(self, run=None):
        self.run = run

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, values: dict, step: int | None = None):
        """One history row (a point of a curve at `step`)."""
        if self.run is not None:
            self.run.log(values, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int | None = None):
        """A W&B table under `key` (one row per list in `rows`)."""
        if self.run is not None:
            import wandb
            self.run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def summarize(self, values: dict, prefix: str = ""):
        """Results as the run's summary: every number of a nested dict, named by its path (test/macro_f1)."""
        if self.run is not None:
            self.run.summary.update(flatten_numbers(values, prefix))

    def finish(self, exit_code: int = 0):
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, tb):
        self.finish(exit_code=0 if error_type is None else 1)


def start_run(*, job_type: str, name: str, directory, project: str = PROJECT, group: str | None = None,
              tags=(), config: dict | None = None, mode: str = "auto", keep_id: bool = False,
              enabled: bool = True) -> Tracker:
    """A W&B run writing under DIR/wandb/; an inactive Tracker when not `enabled` or not rank 0.
    keep_id: the run's id lives in DIR/wandb_id, and a rerun on DIR continues that run (resume="allow")
    instead of adding another (training runs, finetune's summary)."""
    if not enabled or not is_rank_zero():
        return Tracker()
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    run_id = run_id_for(directory) if keep_id else None
    run = wandb.init(project=project, name=name, job_type=job_type, group=group, tags=list(tags),
                     config=config or {}, dir=str(directory), mode=resolve_mode(mode), id=run_id,
                     resume="allow" if run_id else None)
    return Tracker(run)


def group_for(configured: str | None, origin: ModelOrigin | None, default: str | None = None) -> str | None:
    """The W&B group of a run: the one the user set, else the measured model's, else `default`."""
    return configured or (origin.group if origin is not None else None) or default


def flatten_numbers(tree: dict, prefix: str = "") -> dict:
    """{"test": {"macro_f1": 0.5}} -> {"test/macro_f1": 0.5}; strings, lists and None are left out."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


# ----------------------------------------------------------------------------- commands without a config

def add_arguments(parser, default_group: str | None = None, files_in: str = "the --out directory"):
    """--wandb/--no-wandb, --wandb-project, --wandb-group for a command configured by flags."""
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True,
                        help=f"log the results as a W&B run (default on; offline, files under {files_in}, "
                             "unless W&B is configured)")
    parser.add_argument("--wandb-project", default=PROJECT, metavar="NAME", help=f"W&B project (default {PROJECT})")
    model_rule = "the group of the run that trained the model, else the model directory's name"
    parser.add_argument("--wandb-group", default=default_group, metavar="NAME",
                        help=f"W&B group (default {default_group or model_rule})")


def start_for_command(args, *, job_type: str, name: str, directory, config: dict,
                      origin: ModelOrigin | None = None) -> Tracker:
    """The run of a flag-configured command: --wandb-group, else the model's group; the code version
    and the model's origin (training run id and dir) in the config as git_commit and model_origin."""
    config = {**config, "git_commit": git_commit(), "model_origin": origin.facts() if origin is not None else None}
    return start_run(job_type=job_type, name=name, directory=directory, project=args.wandb_project,
                     group=group_for(args.wandb_group, origin), config=config, enabled=args.wandb)
