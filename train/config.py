"""Run configuration: nested dataclasses loaded from YAML with dotted `key=value` overrides.

    cfg = load_config("configs/tiny-cpu.yaml", ["train.max_steps=20", "logging.wandb=false"])

Validation collects every problem (unknown key, wrong type, impossible combination) and raises
them together in one ConfigError. The merged config is what a run writes to RUN_DIR/config.yaml.
"""
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from biomamba.config import SCAN_BACKENDS


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""


@dataclass
class ModelConfig:
    arch: str = "mamba"  # mamba | transformer (GPT-NeoX) | bert (masked LM); parameter counts matched
    preset: str = "tiny"  # a BioMambaConfig preset (biomamba/config.py)
    d_model: int | None = None  # overrides of the preset; None keeps the preset's value
    n_layer: int | None = None
    d_state: int | None = None
    scan_backend: str = "auto"


@dataclass
class DataConfig:
    dir: str = "data/pubmed"  # a directory written by `biomamba prepare`
    seq_len: int = 256


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 20
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    decay_fraction: float = 0.2  # wsd: the final fraction of steps that decays
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 8  # sequences per micro-batch per process
    grad_accum: int = 1
    save_every: int = 50
    keep_last: int = 2
    eval_every: int = 50
    eval_batches: int = 8  # val set: the first eval_batches x batch_size x processes val windows
    log_every: int = 1
    init_from: str | None = None  # any checkpoint BioMambaForCausalLM.from_pretrained loads
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    on_nonfinite: str = "stop"  # stop | skip
    parallel: str = "ddp"  # under torchrun: ddp (whole model per rank) | fsdp (sharded, large models)


@dataclass
class LoggingConfig:
    wandb: bool = True
    project: str = "biomamba"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"  # auto (online if W&B is configured, else offline) | offline | online
    samples: int = 2  # sample generations logged at each validation
    sample_tokens: int = 24


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0


# Allowed values of the shared loop's settings; each task's config adds its own.
LOOP_CHOICES = {
    "optim.schedule": ("cosine", "wsd", "constant"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.parallel": ("ddp", "fsdp"),
    "logging.mode": ("auto", "offline", "online"),
}
CHOICES = {
    "model.arch": ("mamba", "transformer", "bert"),
    "model.scan_backend": SCAN_BACKENDS,
    **LOOP_CHOICES,
}


# ----------------------------------------------------------------------------- parsing

def _type_ok(value, annotation) -> bool:
    """Whether a YAML value fits a field annotation (int accepted where float is expected)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _build(cls, values: dict, prefix: str, problems: list):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            problems.append(f"unknown key {prefix}{key} (known: {', '.join(sorted(known))})")
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = _coerce_float(values[f.name], hints[f.name]), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                problems.append(f"{prefix}{f.name} must be a mapping, got {value!r}")
                continue
            kwargs[f.name] = _build(hint, value, f"{prefix}{f.name}.", problems)
        elif not _type_ok(value, hint):
            problems.append(f"{prefix}{f.name}: expected {_type_name(hint)}, got {value!r}")
        else:
            kwargs[f.name] = float(value) if hint is float else value
    return cls(**kwargs)


def _coerce_float(value, hint):
    """YAML 1.1 reads `1e-3` as a string; accept it where a float is expected."""
    if isinstance(value, str) and (hint is float or hint == float | None):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _set_dotted(tree: dict, dotted: str, value):
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_overrides(overrides) -> dict:
    """["train.max_steps=20", "logging.tags=[a,b]"] -> nested dict; values parsed as YAML."""
    tree = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=20)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else None)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_choices(cfg, choices: dict, problems: list):
    """Each dotted setting in `choices` holds one of its allowed values."""
    flat = to_dict(cfg)
    for dotted, allowed in choices.items():
        section, name = dotted.split(".")
        if flat[section][name] not in allowed:
            problems.append(f"{dotted} must be one of {', '.join(allowed)}; got {flat[section][name]!r}")


def check_loop(t: TrainConfig, o: OptimConfig, problems: list):
    """The checks of the shared loop's own settings (train.*, optim.*), for every task's config."""
    for name in ("max_steps", "batch_size", "grad_accum", "save_every", "keep_last", "eval_every", "log_every"):
        if getattr(t, name) < 1:
            problems.append(f"train.{name} must be >= 1, got {getattr(t, name)}")
    if o.lr <= 0:
        problems.append(f"optim.lr must be > 0, got {o.lr}")
    if not 0 <= o.min_lr_ratio <= 1:
        problems.append(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if o.warmup_steps >= t.max_steps and o.schedule != "constant":
        problems.append(f"optim.warmup_steps ({o.warmup_steps}) must be < train.max_steps ({t.max_steps})")
    if o.schedule == "wsd" and not 0 < o.decay_fraction <= 1:
        problems.append(f"optim.decay_fraction must be in (0, 1], got {o.decay_fraction}")


def _check(cfg: RunConfig, problems: list):
    check_choices(cfg, CHOICES, problems)
    check_loop(cfg.train, cfg.optim, problems)
    if cfg.data.seq_len < 2:
        problems.append(f"data.seq_len must be >= 2, got {cfg.data.seq_len}")
    if cfg.model.arch != "mamba" and cfg.train.init_from:
        problems.append("train.init_from loads Mamba checkpoints; it needs model.arch=mamba")


def load_config(path=None, overrides=(), schema=None, check=None):
    """Defaults <- YAML file <- dotted overrides, validated; raises ConfigError listing every problem.

    `schema` is the root dataclass (default RunConfig, the pretraining config) and `check(cfg,
    problems)` its cross-field validation (default: the pretraining checks); fine-tuning and
    retrieval pass their own.
    """
    schema = schema or RunConfig
    check = check or (_check if schema is RunConfig else (lambda cfg, problems: None))
    tree = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML ({error})") from error
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    tree = _merge(tree, parse_overrides(overrides))
    problems = []
    cfg = _build(schema, tree, "", problems)
    check(cfg, problems)  # also when fields failed to parse: report everything at once
    if problems:
        source = f" in {path}" if path else ""
        raise ConfigError(f"{len(problems)} problem(s){source}:\n  " + "\n  ".join(problems))
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)
