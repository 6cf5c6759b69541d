"""Mamba checkpoints in three layouts, read into BioMamba (and written by export.py) through one map.

    ours        config.json (model_type "biomamba") + model.safetensors  (save_pretrained)
    hf          config.json (model_type "mamba" or "mamba2") + model.safetensors / pytorch_model.bin
                (transformers' MambaForCausalLM / Mamba2ForCausalLM, e.g. state-spaces/mamba-130m-hf)
    mamba_ssm   config.json (d_model, n_layer, vocab_size, ssm_cfg, ...) + pytorch_model.bin
                (state-spaces' own, e.g. state-spaces/mamba-130m; ssm_cfg.layer "Mamba2" for
                state-spaces/mamba2-130m)

Parameter names are state-spaces' everywhere, for both block types; HF differs only in
`backbone.embeddings`. KEY_MAPS, HF_CONFIG_FIELDS and SSM_CFG_KEYS serve both directions: loading
here, exporting in biomamba/export.py; the field maps hold one entry per block type (config.ssm_layer).
"""
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import GenerationConfig

from biomamba.config import BioMambaConfig
from biomamba.model_files import check_model_dir
from biomamba.resolve import ModelSpecError, mamba_layout, model_dir_of, read_config

# layout -> {its tensor-name fragment: ours}; state-spaces names are ours.
KEY_MAPS = {"ours": {}, "mamba_ssm": {}, "hf": {"backbone.embeddings.": "backbone.embedding."}}

# transformers' MambaConfig / Mamba2Config field -> BioMambaConfig field (every field that changes what
# the model computes, and the dt initialisation range), per block type.
_HF_SHARED_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "d_model", "num_hidden_layers": "n_layer", "state_size": "d_state",
    "conv_kernel": "d_conv", "expand": "expand", "time_step_min": "dt_min", "time_step_max": "dt_max",
    "time_step_floor": "dt_init_floor", "use_conv_bias": "conv_bias", "use_bias": "bias",
    "layer_norm_epsilon": "rms_norm_eps", "residual_in_fp32": "residual_in_fp32", "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "tie_word_embeddings": "tie_word_embeddings"}
HF_CONFIG_FIELDS = {
    "Mamba1": {**_HF_SHARED_FIELDS, "time_step_rank": "dt_rank", "time_step_init_scheme": "dt_init",
               "time_step_scale": "dt_scale"},
    "Mamba2": {**_HF_SHARED_FIELDS, "head_dim": "headdim", "n_groups": "ngroups", "chunk_size": "chunk_size",
               "time_step_limit": "dt_limit"},
}
# block type -> transformers' model_type and its config / causal LM class names
HF_MODEL_TYPES = {"Mamba1": "mamba", "Mamba2": "mamba2"}
HF_CLASSES = {"Mamba1": ("MambaConfig", "MambaForCausalLM"), "Mamba2": ("Mamba2Config", "Mamba2ForCausalLM")}
# Mamba-2 settings transformers' Mamba2 cannot express (it always has a gated RMSNorm, gate inside
# the norm, D per head): field -> the only value it computes with.
HF_MAMBA2_FIXED = {"rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False}

# state-spaces ssm_cfg keys that map 1:1 onto BioMambaConfig fields, per block type (mamba_ssm's
# Mamba and Mamba2 keyword arguments of the same names).
SSM_CFG_KEYS = {
    "Mamba1": ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
               "dt_init_floor", "conv_bias", "bias"),
    "Mamba2": ("d_state", "d_conv", "expand", "headdim", "ngroups", "A_init_range", "D_has_hdim", "rmsnorm",
               "norm_before_gate", "dt_min", "dt_max", "dt_init_floor", "dt_limit", "bias", "conv_bias",
               "chunk_size"),
}
# mamba_ssm builds its RMSNorms with this epsilon; its config.json has no field for it.
MAMBA_SSM_NORM_EPS = 1e-5
class CheckpointError(ModelSpecError):
    """A checkpoint directory that cannot be loaded; the message names the file or tensor. A
    ModelSpecError, so that a command catching resolve's one error type catches this one too."""


def detect_format(raw: dict, path: Path) -> str:
    layout = mamba_layout(raw)
    if layout is not None:
        return layout
    raise CheckpointError(f"{path / 'config.json'}: not a Mamba checkpoint (model_type "
                          f"{raw.get('model_type')!r}; expected 'biomamba', 'mamba', 'mamba2' or a state-spaces config)")


def _pad_vocab(vocab_size, multiple):
    return vocab_size if not multiple else math.ceil(vocab_size / multiple) * multiple


def config_from_hf(raw: dict, path: Path = Path(".")) -> BioMambaConfig:
    """Our config from a transformers MambaConfig / Mamba2Config dict; a missing field takes the
    common default."""
    layer = "Mamba2" if raw.get("model_type") == "mamba2" else "Mamba1"
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path / 'config.json'}: hidden_act={raw['hidden_act']!r}; Mamba computes with silu")
    fields = {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None}  # absent means none
    fields.update({ours: raw[theirs] for theirs, ours in HF_CONFIG_FIELDS[layer].items() if theirs in raw})
    config = BioMambaConfig(ssm_layer=layer, **fields, pad_vocab_size_multiple=1)
    if layer == "Mamba2" and "num_heads" in raw and raw["num_heads"] != config.nheads:
        raise CheckpointError(f"{path / 'config.json'}: num_heads={raw['num_heads']} but hidden_size * expand / "
                              f"head_dim = {config.nheads}")
    return config


def hf_config_fields(config: BioMambaConfig) -> dict:
    """transformers MambaConfig / Mamba2Config keyword arguments for a model computing what ours computes."""
    fields = {theirs: getattr(config, ours) for theirs, ours in HF_CONFIG_FIELDS[config.ssm_layer].items()}
    if config.ssm_layer == "Mamba2":
        unsupported = [f"{name}={getattr(config, name)}" for name, value in HF_MAMBA2_FIXED.items()
                       if getattr(config, name) != value]
        if unsupported:
            raise CheckpointError(f"{', '.join(unsupported)}: transformers' Mamba2 cannot hold this model "
                                  f"(it computes with {HF_MAMBA2_FIXED})")
        fields.update(num_heads=config.nheads, time_step_limit=tuple(config.dt_limit))
    return fields


def config_from_mamba_ssm(raw: dict, path: Path) -> BioMambaConfig:
    ssm_cfg = dict(raw.get("ssm_cfg") or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    where = path / "config.json"
    if layer not in SSM_CFG_KEYS:
        raise CheckpointError(f"{where}: ssm_cfg.layer={layer!r}; biomamba implements {', '.join(SSM_CFG_KEYS)}")
    if not raw.get("rms_norm", True):
        raise CheckpointError(f"{where}: rms_norm=false (LayerNorm) is not supported")
    if raw.get("d_intermediate", 0):
        raise CheckpointError(f"{where}: d_intermediate>0 (MLP blocks) is not supported")
    if raw.get("attn_layer_idx"):
        raise CheckpointError(f"{where}: attn_layer_idx={raw['attn_layer_idx']} (attention blocks) is not supported")
    if ssm_cfg.get("d_ssm") is not None and ssm_cfg["d_ssm"] != ssm_cfg.get("expand", 2) * raw["d_model"]:
        raise CheckpointError(f"{where}: ssm_cfg.d_ssm={ssm_cfg['d_ssm']} (an MLP beside the SSM) is not supported")
    multiple = raw.get("pad_vocab_size_multiple", 8)
    # The released checkpoints store the vocab padded (50277 -> 50280); the config keeps the raw size.
    return BioMambaConfig(
        ssm_layer=layer, vocab_size=_pad_vocab(raw["vocab_size"], multiple), d_model=raw["d_model"],
        n_layer=raw["n_layer"], residual_in_fp32=raw.get("residual_in_fp32", True),
        pad_vocab_size_multiple=multiple, tie_word_embeddings=raw.get("tie_embeddings", True),
        **{key: ssm_cfg[key] for key in SSM_CFG_KEYS[layer] if key in ssm_cfg})


def mamba_ssm_config_json(config: BioMambaConfig) -> dict:
    """A state-spaces config.json (the keys its released checkpoints and MambaConfig use)."""
    if config.rms_norm_eps != MAMBA_SSM_NORM_EPS:
        raise CheckpointError(f"rms_norm_eps={config.rms_norm_eps}: mamba_ssm always uses "
                              f"{MAMBA_SSM_NORM_EPS}, so its layout cannot hold this model")
    # Our vocab_size is already padded; a multiple that does not divide it would pad it again.
    multiple = config.pad_vocab_size_multiple or 1
    multiple = multiple if config.vocab_size % multiple == 0 else 1
    ssm_cfg = {key: getattr(config, key) for key in SSM_CFG_KEYS[config.ssm_layer]}
    layout = {}
    if config.ssm_layer == "Mamba2":  # as state-spaces/mamba2-* configs: no MLP, no attention layers
        ssm_cfg = {"layer": "Mamba2", **ssm_cfg, "A_init_range": list(config.A_init_range)}
        if tuple(config.dt_limit) == (0.0, float("inf")):
            del ssm_cfg["dt_limit"]  # mamba_ssm's default, which it compares as a tuple; JSON has lists
        layout = {"d_intermediate": 0, "attn_layer_idx": [], "attn_cfg": {}}
    return {"d_model": config.d_model, "n_layer": config.n_layer, "vocab_size": config.vocab_size,
            "ssm_cfg": ssm_cfg, "rms_norm": True, "residual_in_fp32": config.residual_in_fp32,
            "fused_add_norm": True, "pad_vocab_size_multiple": multiple,
            "tie_embeddings": config.tie_word_embeddings, **layout}


def read_state_dict(path: Path) -> dict:
    """Tensors from model.safetensors (or its shards) or pytorch_model.bin (weights only)."""
    single = path / "model.safetensors"
    if single.is_file():
        return _load_safetensors(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for name in files for k, v in _load_safetensors(path / name).items()}
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _load_safetensors(file: Path) -> dict:
    try:
        return load_file(file)
    except SafetensorError as error:  # what check_model_dir's header checks cannot see
        raise CheckpointError(f"{file}: cannot read the weights ({error})") from None


def map_keys(state_dict: dict, fmt: str, to_ours: bool = True) -> dict:
    """Rename tensors from layout `fmt`'s names to ours, or (to_ours=False) from ours to `fmt`'s."""
    pairs = KEY_MAPS[fmt].items() if to_ours else [(ours, theirs) for theirs, ours in KEY_MAPS[fmt].items()]
    mapped = {}
    for key, value in state_dict.items():
        for old, new in pairs:
            key = key.replace(old, new)
        mapped[key] = value
    return mapped


def load_state_dict_checked(model, state_dict: dict, source: str):
    """Copy tensors into `model`, failing on any missing, unexpected or mis-shaped tensor.

    A task head (classifier, projection) that the checkpoint lacks starts from its initialisation,
    and a head the checkpoint has but the model does not (an LM head) is left out; the backbone
    must match exactly. The causal LM is strict everywhere but for its tied head.
    """
    expected = model.state_dict()
    tied = model.config.tie_word_embeddings and "lm_head.weight" in expected
    is_lm = "lm_head.weight" in expected
    if not is_lm:
        state_dict = {k: v for k, v in state_dict.items() if k in expected or k.startswith("backbone.")}
    problems = []
    for key, tensor in expected.items():
        if key not in state_dict:
            new_head = not is_lm and not key.startswith("backbone.")
            if not (tied and key == "lm_head.weight") and not new_head:
                problems.append(f"missing tensor {key} (shape {tuple(tensor.shape)})")
        elif state_dict[key].shape != tensor.shape:
            problems.append(f"tensor {key}: checkpoint shape {tuple(state_dict[key].shape)} "
                            f"does not fit the config's {tuple(tensor.shape)}")
    problems += [f"unexpected tensor {key}" for key in state_dict if key not in expected]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)
    if tied:
        model.tie_weights()


def load_pretrained(cls, path, config=None, torch_dtype=None, dtype=None, device_map=None, **ignored):
    """Build `cls` from a checkpoint directory of any supported layout (see module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (biomamba loads local model directories; "
                              "download a hub model yourself first)")
    path = model_dir_of(path)  # a training run directory loads its model/ (biomamba/resolve.py)
    check_model_dir(path)  # a truncated or corrupt file: one line naming it, before a loader's traceback
    raw = read_config(path)
    fmt = detect_format(raw, path)
    if config is None:
        config = {"ours": lambda: BioMambaConfig.from_dict(raw), "hf": lambda: config_from_hf(raw, path),
                  "mamba_ssm": lambda: config_from_mamba_ssm(raw, path)}[fmt]()
    for key in ("num_labels", "id2label", "label2id", "pooling", "embedding_dim", "scan_backend", "problem_type",
                "bidirectional", "bidirectional_merge"):
        if key in ignored:  # head settings given to from_pretrained
            setattr(config, key, ignored.pop(key))
    state_dict = map_keys(read_state_dict(path), fmt)
    config._name_or_path = str(path)  # as transformers does: model.name_or_path names the source dir
    model = cls(config)
    if "backbone.embedding.weight" not in model.state_dict():  # a bare backbone (BioMambaModel)
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    load_state_dict_checked(model, state_dict, str(path))
    if getattr(model, "backbone_reverse", None) is not None and not any(
            k.startswith("backbone_reverse.") for k in state_dict):  # a causal checkpoint, read both ways
        model.backbone_reverse.load_state_dict(model.backbone.state_dict())
    if model.can_generate() and (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)  # as save_pretrained wrote it
    dtype = dtype or torch_dtype
    if dtype is not None and dtype != "auto":
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    if device_map is not None and isinstance(device_map, (str, torch.device)):
        model = model.to(device_map)
    model.eval()
    return model
