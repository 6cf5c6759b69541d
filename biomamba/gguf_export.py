"""`biomamba export --to gguf`: one float32 GGUF file (OUT/model.gguf) that llama.cpp runs, for a Mamba-1
("mamba") or Mamba-2 ("mamba2") causal LM with its tokenizer.

llama.cpp's own convert_hf_to_gguf.py refuses our tokenizers: it knows a BPE pre-tokenizer by the hash of its
output on a test text, and a tokenizer trained on PubMed is on no list ("BPE pre-tokenizer was not
recognized"). Ours split text as GPT-2 does (tokenizers' ByteLevel with its regex, no normalizer), which
llama.cpp's "gpt-2" pre-tokenizer implements, so this writer names it after checking that. Everything else
follows the converter (conversion/mamba.py, 0.3.36's vendored llama.cpp): the gguf package is llama.cpp's
gguf-py, its TensorNameMap names the tensors from transformers' layout, and the keys, the A_log -> -exp(A_log)
and conv reshapes, the Mamba-2 A/D/norm shapes and the vocabulary (tokens, types, merges, special ids) are
the converter's. Quantize the file with llama.cpp's llama-quantize if you want q8_0 or f16.
"""
from __future__ import annotations

import json
from pathlib import Path

GGUF_FILE = "model.gguf"


class GGUFExportError(ValueError):
    """A model or tokenizer that llama.cpp's format cannot hold as asked; the message says why."""


def write_gguf(model, tokenizer_dir, out: Path) -> Path:
    """Write `model` (BioMambaForCausalLM) and the tokenizer in `tokenizer_dir` to out/model.gguf."""
    try:
        import gguf
    except ImportError:
        raise GGUFExportError("--to gguf needs the gguf package (llama.cpp's gguf-py): "
                              "pip install 'biomamba[gguf]'") from None
    if tokenizer_dir is None:
        raise GGUFExportError("--to gguf: no tokenizer found beside the model (tokenizer.json, or a tokenizer/ "
                              "directory): a GGUF file carries its vocabulary")
    check_supported(model.config)
    pre = gpt2_pre_tokenizer(Path(tokenizer_dir))
    arch = gguf.MODEL_ARCH.MAMBA if model.config.ssm_layer == "Mamba1" else gguf.MODEL_ARCH.MAMBA2
    path = out / GGUF_FILE
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(model.name_or_path).name if model.name_or_path else "biomamba")
    _add_parameters(writer, model.config, arch, gguf)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_vocabulary(writer, model.config.vocab_size, Path(tokenizer_dir), pre, gguf)
    for name, tensor in gguf_tensors(model, arch, gguf):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_supported(config):
    """GGUFExportError naming what llama.cpp's Mamba graphs do not compute: they have no in/out projection
    biases, Mamba-1's expansion is 2, and Mamba-2's is transformers' Mamba2 (gated norm after the gate, one
    D per head) with no dt clamp."""
    from biomamba.checkpoints import HF_MAMBA2_FIXED

    wrong = []
    if config.bias:
        wrong.append("bias=True (in_proj/out_proj biases)")
    if config.ssm_layer == "Mamba1" and config.expand != 2:
        wrong.append(f"expand={config.expand} (the converter asserts 2)")
    if config.ssm_layer == "Mamba2":
        wrong += [f"{name}={getattr(config, name)}" for name, value in HF_MAMBA2_FIXED.items()
                  if getattr(config, name) != value]
        if tuple(config.dt_limit) != (0.0, float("inf")):
            wrong.append(f"dt_limit={tuple(config.dt_limit)} (llama.cpp does not clamp dt)")
    if wrong:
        raise GGUFExportError(f"--to gguf: {', '.join(wrong)}: llama.cpp's {config.ssm_layer} graph does not "
                              "compute this model")


def gpt2_pre_tokenizer(tokenizer_dir: Path) -> str:
    """'gpt-2' when tokenizer.json splits text as GPT-2 does; GGUFExportError naming what differs otherwise."""
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(f"--to gguf: {tokenizer_dir} has no tokenizer.json (a fast tokenizer is needed)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model, pre, normalizer = spec.get("model") or {}, spec.get("pre_tokenizer") or {}, spec.get("normalizer")
    byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
    if model.get("type") != "BPE" or not byte_level or normalizer is not None:
        raise GGUFExportError(
            f"--to gguf: {path}: llama.cpp's 'gpt-2' pre-tokenizer needs a BPE model, a ByteLevel pre-tokenizer "
            f"with GPT-2's regex and no prefix space, and no normalizer; this one has model "
            f"{model.get('type')!r}, pre_tokenizer {pre.get('type')!r} (use_regex {pre.get('use_regex')}, "
            f"add_prefix_space {pre.get('add_prefix_space')}), normalizer {normalizer and normalizer.get('type')!r}")
    return "gpt-2"  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT2 (src/llama-vocab.cpp)


def _add_parameters(writer, config, arch, gguf):
    """The hyperparameters conversion/mamba.py writes (MambaModel / Mamba2Model.set_gguf_parameters)."""
    writer.add_context_length(2 ** 20)  # the converter's: a recurrent model has no context limit
    writer.add_embedding_length(config.d_model)
    writer.add_feed_forward_length(0)  # unused by llama.cpp's Mamba, but read when it loads
    writer.add_head_count(0)
    writer.add_block_count(config.n_layer)
    writer.add_ssm_conv_kernel(config.d_conv)
    writer.add_ssm_inner_size(config.d_inner)
    writer.add_ssm_state_size(config.d_state)
    if arch == gguf.MODEL_ARCH.MAMBA:
        writer.add_ssm_time_step_rank(config.dt_rank)
        writer.add_ssm_dt_b_c_rms(False)
    else:
        writer.add_ssm_time_step_rank(config.nheads)
        writer.add_ssm_group_count(config.ngroups)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def gguf_tensors(model, arch, gguf):
    """(GGUF name, float32 numpy array) for every tensor, from transformers' layout as the converter maps it."""
    from biomamba.checkpoints import map_keys

    tensors = map_keys(model.state_dict(), "hf", to_ours=False)
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # llama.cpp reads token_embd.weight for a missing output.weight
    names = gguf.get_tensor_name_map(arch, model.config.n_layer)
    for name, tensor in tensors.items():
        if name.endswith(".dt_bias"):  # Mamba-2: the converter's filter_tensors
            name = name[:-len(".dt_bias")] + ".dt_proj.bias"
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise GGUFExportError(f"--to gguf: no GGUF name for tensor {name!r} of a {arch.name.lower()} model")
        data = tensor.detach().float()
        if name.endswith(".A_log"):
            data = -data.exp()
        if ".ssm_conv1d." in new and new.endswith(".weight"):
            data = data.squeeze()  # (channels, 1, width) -> (channels, width)
        if arch == gguf.MODEL_ARCH.MAMBA2:
            if new.endswith((".ssm_a", ".ssm_d")):
                data = data.reshape(*data.shape, 1)
            elif new.endswith(".ssm_norm.weight"):
                data = data.reshape(model.config.ngroups, -1)
        yield new, data.contiguous().numpy()


def _add_vocabulary(writer, vocab_size: int, tokenizer_dir: Path, pre: str, gguf):
    """The converter's _set_vocab_gpt2 (get_vocab_base): one token per embedding row, [PAD<i>] where the
    tokenizer has none, added special tokens as CONTROL; then merges and special ids (SpecialVocab)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise GGUFExportError(f"--to gguf: the tokenizer in {tokenizer_dir} has ids up to {max(vocab.values())}, "
                              f"beyond the model's {vocab_size} embedding rows")
    by_id = {i: token for token, i in vocab.items()}
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True).add_to_gguf(writer)
