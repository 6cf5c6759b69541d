"""Load Mamba checkpoints from three layouts into BioMamba, through one explicit key map.

    ours        config.json (model_type "biomamba") + model.safetensors  (save_pretrained)
    hf          config.json (model_type "mamba") + model.safetensors / pytorch_model.bin
                (transformers' MambaForCausalLM, e.g. state-spaces/mamba-130m-hf)
    mamba_ssm   config.json (d_model, n_layer, vocab_size, ssm_cfg, ...) + pytorch_model.bin
                (state-spaces' own, e.g. state-spaces/mamba-130m)

Parameter names are state-spaces' everywhere; HF differs only in `backbone.embeddings`.
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from biomamba.config import BioMambaConfig
from biomamba.resolve import mamba_layout

# HF name fragment -> our name fragment; mamba_ssm needs none.
HF_KEY_MAP = {"backbone.embeddings.": "backbone.embedding."}

# state-spaces ssm_cfg keys that map 1:1 onto BioMambaConfig fields.
SSM_CFG_KEYS = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
                "dt_init_floor", "conv_bias", "bias")


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
    return BioMambaConfig(
        vocab_size=raw["vocab_size"], d_model=raw["hidden_size"], n_layer=raw["num_hidden_layers"],
        d_state=raw.get("state_size", 16), d_conv=raw.get("conv_kernel", 4), expand=raw.get("expand", 2),
        dt_rank=raw.get("time_step_rank", "auto"), dt_min=raw.get("time_step_min", 0.001),
        dt_max=raw.get("time_step_max", 0.1), dt_init=raw.get("time_step_init_scheme", "random"),
        dt_scale=raw.get("time_step_scale", 1.0), dt_init_floor=raw.get("time_step_floor", 1e-4),
        conv_bias=raw.get("use_conv_bias", True), bias=raw.get("use_bias", False),
        rms_norm_eps=raw.get("layer_norm_epsilon", 1e-5), residual_in_fp32=raw.get("residual_in_fp32", True),
        pad_token_id=raw.get("pad_token_id"), bos_token_id=raw.get("bos_token_id"),
        eos_token_id=raw.get("eos_token_id"), tie_word_embeddings=raw.get("tie_word_embeddings", True),
        pad_vocab_size_multiple=1)


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


def map_keys(state_dict: dict, fmt: str) -> dict:
    if fmt != "hf":
        return dict(state_dict)
    mapped = {}
    for key, value in state_dict.items():
        for theirs, ours in HF_KEY_MAP.items():
            key = key.replace(theirs, ours)
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
    dtype = dtype or torch_dtype
    if dtype is not None and dtype != "auto":
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    if device_map is not None and isinstance(device_map, (str, torch.device)):
        model = model.to(device_map)
    model.eval()
    return model
