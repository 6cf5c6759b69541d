"""Model SPECs for `biomamba eval-ppl`: a local directory -> model, tokenizer and how to score it.

    RUN_DIR (has model/)        a `biomamba pretrain` run: RUN_DIR/model with its tokenizer
    model_type biomamba/mamba,  BioMambaForCausalLM (our dirs, HF Mamba dirs, state-spaces
    or a state-spaces config    mamba_ssm dirs); causal rolling log-likelihood
    *ForMaskedLM / bert-like    AutoModelForMaskedLM; pseudo-log-likelihood (pseudo-perplexity)
    any other config.json       AutoModelForCausalLM (GPT-2, BioGPT, GPT-NeoX, ...); causal
The tokenizer comes from the model directory, or from --tokenizer DIR (state-spaces dirs ship
none). Only local paths are read: nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from biomamba.model_files import check_model_dir
from biomamba.resolve import (TOKENIZER_FILES, ModelSpecError, find_tokenizer_dir, load_tokenizer, model_dir_of,
                              model_family, read_config)

__all__ = ["EvalModel", "ModelSpecError", "load_model", "default_max_length", "prefix_token_id"]

DEFAULT_CAUSAL_MAX_LENGTH = 1024


@dataclasses.dataclass
class EvalModel:
    model: object
    tokenizer: object
    scoring: str  # "causal" | "masked"
    family: str  # "biomamba" | "transformers"
    name: str
    path: str
    max_positions: int | None  # the model's positional limit, None for Mamba

    @property
    def is_mamba(self) -> bool:
        return self.family == "biomamba"


def tokenizer_identity(tokenizer, directory: Path) -> dict:
    """Name, class, vocab size, special tokens and a sha256 over the tokenizer files."""
    digest = hashlib.sha256()
    files = [f for f in TOKENIZER_FILES + ("merges.txt", "special_tokens_map.json") if (directory / f).is_file()]
    for f in sorted(files):
        digest.update(f.encode() + b"\0" + (directory / f).read_bytes())
    return {"name": getattr(tokenizer, "name_or_path", "") or str(directory), "path": str(directory),
            "class": type(tokenizer).__name__, "vocab_size": len(tokenizer), "sha256": digest.hexdigest(),
            "files": sorted(files), "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token}


def _max_positions(raw: dict) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(raw.get(key), int):
            return raw[key]
    return None


def load_model(spec, tokenizer_dir=None, device="cpu", dtype="float32", rounded=None) -> tuple[EvalModel, dict]:
    """The model a SPEC names, ready for scoring, and its tokenizer's identity; rounded ("int8",
    "int8-dynamic", "bf16-weights"): a BioMamba model rounded to it (biomamba.decode.quantize_weights)."""
    import torch
    path = Path(spec)
    model_dir = model_dir_of(path)
    raw = read_config(model_dir)
    family, scoring = model_family(raw)
    tok_dir = find_tokenizer_dir(model_dir, tokenizer_dir, hint="pass --tokenizer DIR")  # before the weights
    tokenizer = load_tokenizer(tok_dir)
    torch_dtype = getattr(torch, dtype)
    check_model_dir(model_dir)  # truncated weights: one line naming the file, whichever loader follows
    try:
        if family == "biomamba":
            from biomamba import BioMambaForCausalLM
            model = BioMambaForCausalLM.from_pretrained(str(model_dir))
        elif scoring == "masked":
            from transformers import AutoModelForMaskedLM
            model = AutoModelForMaskedLM.from_pretrained(str(model_dir), local_files_only=True)
        else:
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelSpecError(f"{model_dir}: cannot load the model ({type(err).__name__}: {err})") from None
    model = model.to(device=device, dtype=torch_dtype).eval()
    if rounded:
        if family != "biomamba":
            raise ModelSpecError(f"{model_dir}: --precision {rounded} (rounded weights) is for BioMamba models")
        from biomamba.decode import quantize_weights
        quantize_weights(model, rounded)
    name = path.name if model_dir == path else f"{path.name}/{model_dir.name}"
    loaded = EvalModel(model, tokenizer, scoring, family, name, str(path), _max_positions(raw))
    return loaded, tokenizer_identity(tokenizer, tok_dir)


def default_max_length(loaded: EvalModel, requested: int | None) -> tuple[int, str | None]:
    """--max-length, or the default (1024 causal, 512 masked) capped at the model's positional limit."""
    limit = loaded.max_positions
    if requested is not None:
        if limit is not None and requested > limit:
            raise ModelSpecError(f"{loaded.path}: --max-length {requested} exceeds the model's "
                                 f"{limit} positions")
        return requested, None
    default = DEFAULT_CAUSAL_MAX_LENGTH if loaded.scoring == "causal" else 512
    if limit is not None and limit < default:
        return limit, f"max_length {default} lowered to the model's {limit} positions"
    return default, None


def prefix_token_id(tokenizer) -> tuple[int, str]:
    """The token the first window is conditioned on: BOS, else EOS."""
    for attr in ("bos_token", "eos_token"):
        token_id = getattr(tokenizer, f"{attr}_id")
        if token_id is not None:
            return token_id, getattr(tokenizer, attr)
    raise ModelSpecError("the tokenizer has neither a BOS nor an EOS token to condition the first window on")
