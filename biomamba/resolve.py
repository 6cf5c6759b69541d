"""Which model a directory holds and where its tokenizer is: the one answer every command uses.

    model_dir_of(path)        a model directory, a run directory's model/, or the one seed_N/model of a
                              fine-tuning run directory (several seeds: pass RUN/seed_N)
    local_model(spec)         model_dir_of for a local path; a name that is none (a hub name) as given
    training_run_dir(path)    RUN for a model given as RUN or RUN/model of a biomamba training run
    trained_by(model_dir)     the training run that wrote a model directory: run dir, job, objective, task,
                              seed, LoRA or full (from its config.yaml); None for a model no run of ours wrote
    read_config(model_dir)    its config.json (the one reader of config.json)
    mamba_layout(raw)         "ours" | "hf" | "mamba_ssm" for Mamba / Mamba-2 checkpoints, None for any other
    model_family(raw)         ("biomamba" | "transformers", "causal" | "masked")
    find_tokenizer_dir(...)   the first of an explicit dir, the model dir, its tokenizer/, fallbacks
    load_tokenizer(dir)       transformers' AutoTokenizer, local files only

Errors are ModelSpecError (a ValueError) naming the directory and what to do; nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
MASKED_MODEL_TYPES = {"bert", "roberta", "distilbert", "albert", "camembert", "xlm-roberta", "mpnet",
                      "deberta", "deberta-v2", "modernbert", "megatron-bert", "esm"}


class ModelSpecError(ValueError):
    """A model or tokenizer location that cannot be used; the message names it and what to do."""


def model_dir_of(path) -> Path:
    """A pretraining run dir's model/, else the directory itself (which must hold config.json)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelSpecError(f"{path}: no such model directory (pass a local path; nothing is downloaded)")
    if (path / "model" / "config.json").is_file() and not (path / "config.json").is_file():
        return path / "model"
    if not (path / "config.json").is_file() and not (path / "model").exists():
        seeds = sorted(p.parent for p in path.glob("seed_*/model/config.json"))
        if len(seeds) == 1:  # a fine-tuning run of one seed (finetune writes RUN/seed_N/model)
            return seeds[0]
        if seeds:
            raise ModelSpecError(f"{path}: a fine-tuning run of {len(seeds)} seeds; pass one seed's directory "
                                 f"({', '.join(str(s.parent) for s in seeds)})")
    if not (path / "config.json").is_file():
        raise ModelSpecError(f"{path}: no config.json (expected a model directory or a run directory with model/)")
    return path


def local_model(spec):
    """The model directory of a local model (model dir, RUN or RUN/model); a `spec` that is no local
    path is returned as given: a hub name, which transformers resolves with the user's own network."""
    return model_dir_of(spec) if Path(spec).exists() else spec


def training_run_dir(model_path) -> Path | None:
    """RUN for a model given as RUN or RUN/model of a biomamba training run (RUN holds config.yaml)."""
    path = Path(model_path)
    for candidate in (path, path.parent if path.name == "model" else None):
        if candidate is not None and (candidate / "config.yaml").is_file():
            return candidate
    return None


def trained_by(model_dir) -> dict | None:
    """What the biomamba training run that wrote `model_dir` (RUN/model, RUN/seed_N/model) was, from the
    config.yaml it left beside the model: eval results carry it so a score names its fine-tuning run."""
    import yaml
    run = training_run_dir(model_dir)
    if run is None:
        return None
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"run_dir": str(run), "job": "unknown (config.yaml unreadable)"}
    resolved, model, train = cfg.get("resolved") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    facts = {"run_dir": str(run), "job": (resolved.get("wandb") or {}).get("job_type"),
             "steps": train.get("max_steps"), "seed": resolved.get("seed", cfg.get("seed")),
             "git_commit": resolved.get("git_commit")}
    if "task" in cfg:  # biomamba finetune (runs older than --objective were all classification)
        facts.update(job="finetune", objective=cfg.get("objective", "classification"), task=cfg.get("task"),
                     from_model=model.get("path"), lora=bool(model.get("lora")), init=model.get("init"))
    else:  # biomamba pretrain
        facts.update(job=facts["job"] or "pretrain", arch=model.get("arch"), init_from=model.get("init_from"))
    return facts


_FLOAT_TAGS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def read_config(model_dir) -> dict:
    config = Path(model_dir) / "config.json"
    try:
        return json.loads(config.read_text(), object_hook=_float_tags)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ModelSpecError(f"{config}: no config.json (expected a model directory)") from None
    except json.JSONDecodeError as err:
        raise ModelSpecError(f"{config}: invalid JSON ({err})") from None


def _float_tags(obj: dict):
    """transformers writes inf as {"__float__": "Infinity"} (e.g. Mamba2Config.time_step_limit)."""
    if set(obj) == {"__float__"} and obj["__float__"] in _FLOAT_TAGS:
        return _FLOAT_TAGS[obj["__float__"]]
    return obj


def mamba_layout(raw: dict) -> str | None:
    """The checkpoint layout of a Mamba config.json (see biomamba/checkpoints.py), None if not Mamba."""
    model_type = raw.get("model_type")
    if model_type == "biomamba":
        return "ours"
    if model_type in ("mamba", "mamba2"):
        return "hf"
    if model_type is None and "d_model" in raw and "n_layer" in raw:
        return "mamba_ssm"
    return None


def model_family(raw: dict) -> tuple[str, str]:
    """(family, scoring) of a config.json: our Mamba models, or a transformers causal/masked LM."""
    if mamba_layout(raw) is not None:
        return "biomamba", "causal"
    model_type, architectures = raw.get("model_type"), raw.get("architectures") or []
    if any(a.endswith("ForMaskedLM") for a in architectures) or (
            model_type in MASKED_MODEL_TYPES and not any(a.endswith("ForCausalLM") for a in architectures)):
        return "transformers", "masked"
    return "transformers", "causal"


def has_tokenizer(directory) -> bool:
    return directory is not None and any((Path(directory) / f).is_file() for f in TOKENIZER_FILES)


def find_tokenizer_dir(model_dir, explicit=None, fallbacks=(), hint: str = "pass a tokenizer directory") -> Path:
    """`explicit` if given (it must hold a tokenizer), else the first of the model dir, its tokenizer/
    subdirectory and `fallbacks` (e.g. a prepared data dir's tokenizer/) that holds one."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        model_dir = Path(model_dir)
        candidates = [model_dir, model_dir / "tokenizer", *(Path(f) for f in fallbacks if f)]
    for directory in candidates:
        if has_tokenizer(directory):
            return directory
    also = f" (nor in {', '.join(str(c) for c in candidates[1:])})" if len(candidates) > 1 else ""
    raise ModelSpecError(f"{candidates[0]}: no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...){also}; "
                         f"state-spaces checkpoints ship none: {hint}")


def load_tokenizer(directory):
    """transformers' AutoTokenizer from a local directory (never the hub)."""
    from transformers import AutoTokenizer

    from biomamba.model_files import check_tokenizer_dir

    check_tokenizer_dir(directory)  # truncated or corrupt JSON: one line naming the file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelSpecError(f"{directory}: cannot load its tokenizer ({type(err).__name__}: {err})") from None
    return tokenizer
