"""Export a BioMamba causal LM to transformers', state-spaces' or llama.cpp's own format, leaving biomamba behind.

    transformers   config.json (model_type "mamba" or "mamba2") + model.safetensors: loads with plain
                   transformers, `MambaForCausalLM.from_pretrained(OUT)` (Mamba2ForCausalLM for a
                   Mamba-2 model), no biomamba import
    state-spaces   config.json (d_model, n_layer, vocab_size, ssm_cfg, ...; ssm_cfg.layer "Mamba2"
                   for a Mamba-2 model) + pytorch_model.bin: the layout of mamba_ssm's
                   MambaLMHeadModel.from_pretrained
    gguf           model.gguf: llama.cpp's file (float32, with the tokenizer), what its
                   convert_hf_to_gguf.py writes, which refuses our tokenizers (biomamba/gguf_export.py);
                   needs the gguf package (pip install 'biomamba[gguf]')

Examples:
  biomamba export --model runs/tiny/model --to transformers --out exported/tiny-hf
  biomamba export --model runs/tiny --to state-spaces --out exported/tiny-ssm
  biomamba export --model runs/tiny --to gguf --out exported/tiny-gguf   # then llama.cpp -m .../model.gguf

Tensor names and config fields go through the maps loading uses (biomamba/checkpoints.py), so an
export loads back through BioMambaForCausalLM.from_pretrained with the same logits. Tokenizer files
found beside the model (or in its tokenizer/) are copied along. The directory is built under a
temporary name and renamed into place, so OUT is never left half-written. Only the causal LM
exports: neither transformers nor mamba_ssm has a class for our embedding or classification heads.
"""
from __future__ import annotations

# torch, safetensors and transformers are imported where a model is read or written, so that
# `biomamba export --help` loads none of them (biomamba/cli.py).

import os
import shutil
import sys
from pathlib import Path

from biomamba.io import discard, replace_dir
from biomamba.resolve import TOKENIZER_FILES, ModelSpecError, find_tokenizer_dir, model_dir_of, read_config

TARGETS = ("transformers", "state-spaces", "gguf")
# Files a tokenizer directory may hold besides the ones that identify it (resolve.TOKENIZER_FILES).
TOKENIZER_COMPANIONS = ("special_tokens_map.json", "merges.txt", "added_tokens.json", "chat_template.jinja")


class ExportError(ValueError):
    """A model that cannot be exported as asked; the message names it and the reason."""


def export_model(model_or_dir, to: str, out) -> Path:
    """Write `model_or_dir` (a BioMambaForCausalLM or a directory it loads from) to `out` in layout `to`."""
    if to not in TARGETS:
        raise ExportError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    model, source_dir = _causal_lm(model_or_dir)
    out = Path(out)
    building = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    discard(building)  # a leftover of an interrupted export
    building.mkdir(parents=True)
    try:
        if to == "gguf":  # the tokenizer goes inside the file
            _write_gguf(model, source_dir, building)
        else:
            WRITERS[to](model, building)
            _copy_tokenizer(source_dir, building)
        replace_dir(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def _causal_lm(model_or_dir):
    """(model, the directory it came from or None); refuses heads that have no peer class."""
    from torch.nn import Module

    from biomamba.modeling import BioMambaForCausalLM

    if isinstance(model_or_dir, Module):
        if not isinstance(model_or_dir, BioMambaForCausalLM):
            raise ExportError(_not_a_causal_lm(type(model_or_dir).__name__, "the model"))
        source = Path(model_or_dir.name_or_path) if model_or_dir.name_or_path else None
        return model_or_dir, (source if source is not None and source.is_dir() else None)
    model_dir = model_dir_of(model_or_dir)
    architectures = read_config(model_dir).get("architectures") or ["BioMambaForCausalLM"]
    unsupported = [name for name in architectures if not name.endswith("ForCausalLM")]
    if unsupported:
        raise ExportError(_not_a_causal_lm(unsupported[0], str(model_dir)))
    return BioMambaForCausalLM.from_pretrained(model_dir), model_dir


def _not_a_causal_lm(class_name, where):
    return (f"{where}: a {class_name}; only a causal LM (BioMambaForCausalLM) exports, because neither "
            "transformers nor mamba_ssm has a class for this model")


def _write_transformers(model, out: Path):
    import transformers
    from safetensors.torch import save_file

    from biomamba.checkpoints import HF_CLASSES, CheckpointError, hf_config_fields, map_keys

    config_class, model_class = HF_CLASSES[model.config.ssm_layer]
    try:
        fields = hf_config_fields(model.config)
    except CheckpointError as error:
        raise ExportError(f"--to transformers: {error}") from None
    getattr(transformers, config_class)(**fields, architectures=[model_class]).save_pretrained(out)
    tensors = model.state_dict()
    if model.config.tie_word_embeddings:  # transformers re-ties it on load, as its own save does
        tensors.pop("lm_head.weight")
    tensors = {key: value.detach().contiguous() for key, value in map_keys(tensors, "hf", to_ours=False).items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


def _write_state_spaces(model, out: Path):
    import torch

    from biomamba.checkpoints import CheckpointError, mamba_ssm_config_json, map_keys
    from biomamba.io import write_json

    try:
        config_json = mamba_ssm_config_json(model.config)
    except CheckpointError as error:
        raise ExportError(f"--to state-spaces: {error}") from None
    write_json(out / "config.json", config_json)
    # mamba_ssm loads strictly: lm_head.weight is stored even when tied, as its own checkpoints do.
    tensors = {key: value.detach().clone() for key, value in map_keys(model.state_dict(), "mamba_ssm", False).items()}
    torch.save(tensors, out / "pytorch_model.bin")


def _write_gguf(model, source_dir, out: Path):
    from biomamba.gguf_export import GGUFExportError, write_gguf

    try:
        write_gguf(model, _tokenizer_dir(source_dir), out)
    except GGUFExportError as error:
        raise ExportError(str(error)) from None


WRITERS = {"transformers": _write_transformers, "state-spaces": _write_state_spaces}


def _loader(to: str, out: Path) -> str:
    """The call that loads an export of layout `to`. Only transformers' config.json names a class
    (MambaForCausalLM, Mamba2ForCausalLM); state-spaces' has no architectures key, so it is not read."""
    if to == "transformers":
        return f"transformers.{read_config(out)['architectures'][0]}.from_pretrained"
    if to == "gguf":
        return "llama_cpp.Llama(model_path=...) or llama.cpp's llama-cli -m"
    return "mamba_ssm.models.mixer_seq_simple.MambaLMHeadModel.from_pretrained"


def _tokenizer_dir(source_dir) -> Path | None:
    """The tokenizer directory of `source_dir` (itself or its tokenizer/); None if it has none."""
    if source_dir is None:
        return None
    try:
        return find_tokenizer_dir(source_dir)
    except ModelSpecError:
        return None


def _copy_tokenizer(source_dir, out: Path) -> Path | None:
    """Copy the tokenizer files of `source_dir` (or its tokenizer/) into `out`; None if it has none."""
    tokenizer_dir = _tokenizer_dir(source_dir)
    if tokenizer_dir is None:
        return None
    for name in TOKENIZER_FILES + TOKENIZER_COMPANIONS:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    return tokenizer_dir


# ----------------------------------------------------------------------------- the subcommand

def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model directory (ours, HF Mamba, state-spaces) or run dir")
    parser.add_argument("--to", required=True, choices=TARGETS, help="the layout to write")
    parser.add_argument("--out", required=True, help="output directory (replaced if it exists); --to gguf "
                        "writes OUT/model.gguf")


def run(args):
    from biomamba.checkpoints import CheckpointError

    try:
        out = export_model(args.model, args.to, args.out)
    except (ExportError, CheckpointError, ModelSpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    loader = _loader(args.to, out)
    if args.to == "gguf":
        from biomamba.gguf_export import GGUF_FILE

        print(f"wrote {out / GGUF_FILE} (llama.cpp's GGUF, float32, with the tokenizer); load it with {loader}")
        return 0
    tokenizer = "with" if any((out / name).is_file() for name in TOKENIZER_FILES) else "without"
    print(f"wrote {out} ({args.to} layout, {tokenizer} tokenizer files); load it with {loader}({str(out)!r})")
    return 0
