"""Run configuration: nested dataclasses loaded from YAML with dotted `key=value` overrides.

    cfg = load_config("configs/tiny-cpu.yaml", ["train.max_steps=20", "logging.wandb=false"])

One way to declare a setting, for every command's schema: a dataclass field whose default is the
default, `choice(default, allowed)` for a closed set of values and `at_least(default, minimum)` for a
lower bound. A section's defaults come from its parent's default instance, so a schema sets other
defaults for a shared section with `field(default_factory=lambda: OptimConfig(lr=...))`, and a YAML
file that names a few keys of that section keeps the schema's defaults for the rest.
Validation collects every problem (unknown key, wrong type, value not allowed, impossible
combination) and raises them together in one ConfigError. The merged config is what a run writes to
RUN_DIR/config.yaml.
"""
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from biomamba.config import SCAN_BACKENDS, SSM_LAYERS, preset_problem


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""


def choice(default, allowed):
    """A setting that takes one of `allowed` (checked wherever it is set)."""
    allowed = tuple(allowed)
    assert default in allowed, (default, allowed)
    return field(default=default, metadata={"choices": allowed})


def at_least(default, minimum):
    """A number that must be >= minimum (None stays allowed where the type admits it)."""
    return field(default=default, metadata={"min": minimum})


@dataclass
class ModelConfig:
    # the model family: mamba (BioMamba); transformer: the GPT-NeoX baseline, bert: a masked LM, both
    # parameter-matched to the BioMamba of model.preset and model.ssm_layer
    arch: str = choice("mamba", ("mamba", "transformer", "bert"))
    ssm_layer: str = choice("Mamba1", SSM_LAYERS)  # the block type, as BioMambaConfig.ssm_layer
    preset: str = "tiny"  # a size of that block type (biomamba/config.py PRESETS)
    d_model: int | None = at_least(None, 1)  # overrides of the preset; None keeps the preset's value
    n_layer: int | None = at_least(None, 1)
    d_state: int | None = at_least(None, 1)
    scan_backend: str = choice("auto", SCAN_BACKENDS)
    init_from: str | None = None  # --init-from: any checkpoint BioMambaForCausalLM.from_pretrained loads, or a run dir


@dataclass
class DataConfig:
    dir: str = "data/pubmed"  # a directory written by `biomamba prepare`
    seq_len: int = at_least(256, 2)
    # packed documents never see each other: the scan and conv state reset at each document's EOS
    # separator (seq_idx), as eval-ppl scores a document alone after EOS. None: on for the
    # state-space model (model.arch=mamba), which trains better with it (README, results);
    # the baselines have no scan to reset
    document_resets: bool | None = None
    # several prepared directories mixed by weight (train/mixture.py): [{dir, weight, name}, ...]; when
    # given it replaces data.dir (the one-source case). name defaults to the directory's name
    mixture: list[dict] = field(default_factory=list)


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = at_least(20, 0)
    schedule: str = choice("cosine", ("cosine", "wsd", "constant"))  # wsd: warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the final fraction of steps that decays
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class TrainConfig:
    max_steps: int = at_least(100, 1)
    batch_size: int = at_least(8, 1)  # sequences (examples) per micro-batch per process
    grad_accum: int = at_least(1, 1)
    save_every: int = at_least(50, 1)
    keep_last: int = at_least(2, 1)
    eval_every: int = at_least(50, 1)
    eval_batches: int = at_least(8, 1)  # val set: eval_batches x batch_size x processes val windows
    log_every: int = at_least(1, 1)
    on_nonfinite: str = choice("stop", ("stop", "skip"))
    parallel: str = choice("ddp", ("ddp", "fsdp"))  # under torchrun: ddp (whole model per rank) | fsdp


@dataclass
class RuntimeConfig:
    """Where and how a command computes: the `run` section of every schema (--device, --precision)."""
    device: str = choice("auto", ("auto", "cpu", "cuda"))
    precision: str = choice("auto", ("auto", "fp32", "bf16"))  # auto: bf16 autocast on GPU, fp32 on CPU
    # --threads N; None: the CPUs this process may use. Applied by biomamba/cli.py (biomamba.threads)
    # before torch loads, recorded here so the run's config says it.
    threads: int | None = at_least(None, 1)


# Old spellings, refused with the new name: one name for each setting in every command (README).
RENAMED = {"train.init_from": "model.init_from", "train.device": "run.device",
           "train.precision": "run.precision", "data.tokenizer": "model.tokenizer"}
# Old values of a setting, refused the same way: the block type is spelled model.ssm_layer only.
RENAMED_VALUES = {("model.arch", "mamba2"): "model.arch=mamba model.ssm_layer=Mamba2"}


@dataclass
class LoggingConfig:
    wandb: bool = True
    project: str = "biomamba"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = choice("auto", ("auto", "offline", "online"))  # auto: online if W&B is configured
    samples: int = at_least(2, 0)  # sample generations logged at each validation
    sample_tokens: int = at_least(24, 1)


@dataclass
class MLMConfig:
    """Masked-LM settings, read only by model.arch=bert (train/mlm.py)."""
    mask_rate: float = 0.15  # the fraction of each window's tokens scored (BERT: 0.15); in (0, 1)
    # the word embeddings' (tied to the MLM decoder) lr as a fraction of optim.lr; in (0, 1]
    word_embedding_lr_ratio: float = 1.0


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RuntimeConfig = field(default_factory=RuntimeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0


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


def _build(cls, values: dict, prefix: str, problems: list, defaults=None):
    """An instance of `cls` from `values`, every other field from `defaults` (default: cls())."""
    defaults = defaults if defaults is not None else cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if f"{prefix}{key}" in RENAMED:
            problems.append(f"{prefix}{key} is now {RENAMED[prefix + key]} (one name in every command)")
        elif key not in known:
            problems.append(f"unknown key {prefix}{key} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        if f.name not in values:
            kwargs[f.name] = default
            continue
        value, hint = _coerce_float(values[f.name], hints[f.name]), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if isinstance(value, dict):
                kwargs[f.name] = _build(hint, value, f"{prefix}{f.name}.", problems, default)
            else:
                problems.append(f"{prefix}{f.name} must be a mapping, got {value!r}")
                kwargs[f.name] = default
        elif not _type_ok(value, hint):
            problems.append(f"{prefix}{f.name}: expected {_type_name(hint)}, got {value!r}")
            kwargs[f.name] = default
        else:
            kwargs[f.name] = float(value) if hint is float else value
            _check_field(f, kwargs[f.name], prefix, problems)
    return cls(**kwargs)


def _check_field(f, value, prefix, problems):
    """The allowed values (choice) and lower bound (at_least) declared on the field."""
    allowed, minimum = f.metadata.get("choices"), f.metadata.get("min")
    if isinstance(value, str) and (prefix + f.name, value) in RENAMED_VALUES:
        problems.append(f"{prefix}{f.name}={value} is now {RENAMED_VALUES[prefix + f.name, value]} "
                        f"(one name in every command)")
    elif allowed is not None and value not in allowed:
        problems.append(f"{prefix}{f.name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    if minimum is not None and value is not None and value < minimum:
        problems.append(f"{prefix}{f.name} must be >= {minimum}, got {value}")


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


def check_loop(t: TrainConfig, o: OptimConfig, problems: list):
    """The cross-field checks of the shared loop's settings (train.*, optim.*), for every schema."""
    if o.lr <= 0:
        problems.append(f"optim.lr must be > 0, got {o.lr}")
    if not 0 <= o.min_lr_ratio <= 1:
        problems.append(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if o.warmup_steps >= t.max_steps and o.schedule != "constant":
        problems.append(f"optim.warmup_steps ({o.warmup_steps}) must be < train.max_steps ({t.max_steps})")
    if o.schedule == "wsd" and not 0 < o.decay_fraction <= 1:
        problems.append(f"optim.decay_fraction must be in (0, 1], got {o.decay_fraction}")


MIXTURE_KEYS = ("dir", "weight", "name")


def mixture_sources(mixture: list[dict]) -> list[dict]:
    """data.mixture with every name filled in: [{name, dir, weight}] (assumes check_mixture passed)."""
    return [{"name": str(e.get("name") or Path(str(e["dir"])).name), "dir": str(e["dir"]), "weight": float(e["weight"])}
            for e in mixture]


def check_mixture(mixture: list[dict], problems: list):
    for k, entry in enumerate(mixture):
        where = f"data.mixture[{k}]"
        unknown = sorted(set(entry) - set(MIXTURE_KEYS))
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(MIXTURE_KEYS)})")
        if not isinstance(entry.get("dir"), str) or not entry.get("dir"):
            problems.append(f"{where}: dir (a prepared directory) is required")
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            problems.append(f"{where}: weight must be a number > 0, got {weight!r}")
        elif not weight > 0:
            problems.append(f"{where}: weight must be > 0, got {weight} (leave a source out instead)")
        if "name" in entry and (not isinstance(entry["name"], str) or not entry["name"] or "/" in entry["name"]):
            problems.append(f"{where}: name must be a non-empty string without '/', got {entry['name']!r}")
    if not problems and mixture:
        names = [s["name"] for s in mixture_sources(mixture)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"data.mixture: each source needs its own name; repeated: {', '.join(repeated)}")


def _check(cfg: RunConfig, problems: list):
    check_loop(cfg.train, cfg.optim, problems)
    check_mixture(cfg.data.mixture, problems)
    if cfg.data.mixture and cfg.model.arch == "bert":
        problems.append("data.mixture mixes causal-LM pretraining data; model.arch=bert reads data.dir only")
    problem = preset_problem(cfg.model.preset, cfg.model.ssm_layer, "model.preset", "model.ssm_layer")
    if problem and cfg.model.ssm_layer in SSM_LAYERS:
        problems.append(problem)
    if cfg.model.arch != "mamba" and cfg.model.init_from:
        problems.append("model.init_from loads Mamba checkpoints; it needs model.arch=mamba")
    if cfg.model.arch != "mamba" and cfg.data.document_resets is True:
        problems.append(f"data.document_resets resets a state-space model's scan and conv; model.arch="
                        f"{cfg.model.arch} has none (set data.document_resets=false for the baselines)")
    if not 0 < cfg.mlm.mask_rate < 1:
        problems.append(f"mlm.mask_rate must be in (0, 1), got {cfg.mlm.mask_rate}")
    if not 0 < cfg.mlm.word_embedding_lr_ratio <= 1:
        problems.append(f"mlm.word_embedding_lr_ratio must be in (0, 1], got {cfg.mlm.word_embedding_lr_ratio}")


def document_resets(cfg) -> bool:
    """Whether pretraining resets at document boundaries: data.document_resets, or when it is None
    (the default) whether the model is a state-space model."""
    if cfg.data.document_resets is not None:
        return cfg.data.document_resets
    return cfg.model.arch == "mamba"


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
