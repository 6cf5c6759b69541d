"""Mamba checkpoints in three layouts, read into BioMamba (and written by export.py) through one map.

    ours        config.json (model_type "biomamba") + model.safetensors  (save_pretrained)
    hf          config.json (model_type "mamba") + model.safetensors / pytorch_model.bin
                (transformers' MambaForCausalLM, e.g. state-spaces/mamba-130m-hf)
    mamba_ssm   config.json (d_model, n_layer, vocab_size, ssm_cfg, ...) + pytorch_model.bin
                (state-spaces' own, e.g. state-spaces/mamba-130m)

Parameter names are state-spaces' everywhere; HF differs only in `backbone.embeddings`.
KEY_MAPS, HF_CONFIG_FIELDS and SSM_CFG_KEYS serve both directions: loading here, exporting in
biomamba/export.py.
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import GenerationConfig

from biomamba.config import BioMambaConfig
from biomamba.resolve import mamba_layout

# layout -> {its tensor-name fragment: ours}; state-spaces names are ours.
KEY_MAPS = {"ours": {}, "mamba_ssm": {}, "hf": {"backbone.embeddings.": "backbone.embedding."}}

# transformers' MambaConfig field -> BioMambaConfig field (every field that changes what the model computes).
HF_CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "d_model", "num_hidden_layers": "n_layer", "state_size": "d_state",
    "conv_kernel": "d_conv", "expand": "expand", "time_step_rank": "dt_rank", "time_step_min": "dt_min",
    "time_step_max": "dt_max", "time_step_init_scheme": "dt_init", "time_step_scale": "dt_scale",
    "time_step_floor": "dt_init_floor", "use_conv_bias": "conv_bias", "use_bias": "bias",
    "layer_norm_epsilon": "rms_norm_eps", "residual_in_fp32": "residual_in_fp32", "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "tie_word_embeddings": "tie_word_embeddings"}

# state-spaces ssm_cfg keys that map 1:1 onto BioMambaConfig fields.
SSM_CFG_KEYS = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
                "dt_init_floor", "conv_bias", "bias")
# mamba_ssm builds its RMSNorms with this epsilon; its config.json has no field for it.
MAMBA_SSM_NORM_EPS = 1e-5


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file or tensor."""


def read_config_json(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: no config.json (expected a model directory)")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file}: invalid JSON ({error})") from error


def detect_format(raw: dict, path: Path) -> str:
    layout = mamba_layout(raw)
    if layout is not None:
        return layout
    raise CheckpointError(f"{path / 'config.json'}: not a Mamba checkpoint (model_type "
                          f"{raw.get('model_type')!r}; expected 'biomamba', 'mamba' or a state-spaces config)")


def _pad_vocab(vocab_size, multiple):
    return vocab_size if not multiple else math.ceil(vocab_size / multiple) * multiple


def config_from_hf(raw: dict) -> BioMambaConfig:
    """Our config from a transformers MambaConfig dict; a missing field takes the common default."""
    fields = {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None}  # absent means none
    fields.update({ours: raw[theirs] for theirs, ours in HF_CONFIG_FIELDS.items() if theirs in raw})
    return BioMambaConfig(**fields, pad_vocab_size_multiple=1)


def hf_config_fields(config: BioMambaConfig) -> dict:
    """transformers MambaConfig keyword arguments for a model computing what ours computes."""
    return {theirs: getattr(config, ours) for theirs, ours in HF_CONFIG_FIELDS.items()}


def config_from_mamba_ssm(raw: dict, path: Path) -> BioMambaConfig:
    ssm_cfg = dict(raw.get("ssm_cfg") or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    if layer != "Mamba1":
        raise CheckpointError(f"{path / 'config.json'}: ssm_cfg.layer={layer!r}; biomamba implements Mamba1")
    if not raw.get("rms_norm", True):
        raise CheckpointError(f"{path / 'config.json'}: rms_norm=false (LayerNorm) is not supported")
    if raw.get("d_intermediate", 0):
        raise CheckpointError(f"{path / 'config.json'}: d_intermediate>0 (MLP blocks) is not supported")
    multiple = raw.get("pad_vocab_size_multiple", 8)
    # The released checkpoints store the vocab padded (50277 -> 50280); the config keeps the raw size.
    return BioMambaConfig(
        vocab_size=_pad_vocab(raw["vocab_size"], multiple), d_model=raw["d_model"], n_layer=raw["n_layer"],
        residual_in_fp32=raw.get("residual_in_fp32", True), pad_vocab_size_multiple=multiple,
        tie_word_embeddings=raw.get("tie_embeddings", True),
        **{key: ssm_cfg[key] for key in SSM_CFG_KEYS if key in ssm_cfg})


def mamba_ssm_config_json(config: BioMambaConfig) -> dict:
    """A state-spaces config.json (the keys its released checkpoints and MambaConfig use)."""
    if config.rms_norm_eps != MAMBA_SSM_NORM_EPS:
        raise CheckpointError(f"rms_norm_eps={config.rms_norm_eps}: mamba_ssm always uses "
                              f"{MAMBA_SSM_NORM_EPS}, so its layout cannot hold this model")
    # Our vocab_size is already padded; a multiple that does not divide it would pad it again.
    multiple = config.pad_vocab_size_multiple or 1
    multiple = multiple if config.vocab_size % multiple == 0 else 1
    return {"d_model": config.d_model, "n_layer": config.n_layer, "vocab_size": config.vocab_size,
            "ssm_cfg": {key: getattr(config, key) for key in SSM_CFG_KEYS}, "rms_norm": True,
            "residual_in_fp32": config.residual_in_fp32, "fused_add_norm": True,
            "pad_vocab_size_multiple": multiple, "tie_embeddings": config.tie_word_embeddings}


def read_state_dict(path: Path) -> dict:
    """Tensors from model.safetensors (or its shards) or pytorch_model.bin (weights only)."""
    single = path / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for name in files for k, v in load_file(path / name).items()}
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


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
    raw = read_config_json(path)
    fmt = detect_format(raw, path)
    if config is None:
        config = {"ours": lambda: BioMambaConfig.from_dict(raw), "hf": lambda: config_from_hf(raw),
                  "mamba_ssm": lambda: config_from_mamba_ssm(raw, path)}[fmt]()
    for key in ("num_labels", "id2label", "label2id", "pooling", "embedding_dim", "scan_backend"):
        if key in ignored:  # head settings given to from_pretrained
            setattr(config, key, ignored.pop(key))
    state_dict = map_keys(read_state_dict(path), fmt)
    config._name_or_path = str(path)  # as transformers does: model.name_or_path names the source dir
    model = cls(config)
    if "backbone.embedding.weight" not in model.state_dict():  # a bare backbone (BioMambaModel)
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    load_state_dict_checked(model, state_dict, str(path))
    if model.can_generate() and (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)  # as save_pretrained wrote it
    dtype = dtype or torch_dtype
    if dtype is not None and dtype != "auto":
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    if device_map is not None and isinstance(device_map, (str, torch.device)):
        model = model.to(device_map)
    model.eval()
    return model
